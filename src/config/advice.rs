//! Warnings about configurations that start but that resolvers, or the zone
//! checkers operators run against a delegation, would trip over, or that do
//! not do what they seem to (locations nobody is placed in). `--check`
//! prints them and the server logs them at start; none stops the start,
//! since each can be deliberate (a single instance on a laptop).

use std::net::IpAddr;

use super::Config;
use crate::dns::zone::{DEFAULT_EDNS_UDP_SIZE, DEFAULT_SOA_MINIMUM};
use crate::dns::Zone;

/// Zonemaster's limits for the SOA timers (ZONE02 to ZONE06).
const CHECKER_MIN_REFRESH: u32 = 14_400;
const CHECKER_MIN_RETRY: u32 = 3_600;
const CHECKER_MIN_EXPIRE: u32 = 604_800;
const CHECKER_MAX_MINIMUM: u32 = 86_400;

impl Config {
    /// One sentence per problem, each naming the option to change.
    /// `zone` is the zone built from this configuration, whose name servers
    /// are already parsed and merged by name.
    pub fn resolver_warnings(&self, zone: &Zone) -> Vec<String> {
        let mut warnings = Vec::new();
        let settings = &self.zone;
        if zone.ns.len() < 2 {
            warnings.push(format!(
                "--ns: one name server ({}); resolvers need a second when it is down, and zone \
                 checkers ask for two (RFC 1034 4.1): run another instance and give every \
                 instance both with --ns",
                zone.ns
                    .first()
                    .map_or("none".into(), |ns| ns.name.to_string())
            ));
        }
        let public_listener = self.listen.iter().any(|a| !a.ip().is_loopback());
        for ns in &zone.ns {
            let addrs = (ns.v4.iter().map(|ip| IpAddr::V4(*ip)))
                .chain(ns.v6.iter().map(|ip| IpAddr::V6(*ip)));
            for ip in addrs.filter(|ip| ip.is_loopback() && public_listener) {
                warnings.push(format!(
                    "--ns {}: address {ip} is loopback, but this server listens beyond it; \
                     resolvers on other machines that follow the NS records cannot reach {ip}",
                    ns.name
                ));
            }
        }
        if let Some(mname) = &settings.soa_mname {
            if !zone.ns.iter().any(|ns| ns.name == *zone.soa.mname()) {
                warnings.push(format!(
                    "--soa-mname {mname} is not one of the --ns names; zone checkers expect \
                     the SOA MNAME to be an authoritative server of the zone"
                ));
            }
        }
        let placing = self.name_rules().1.iter().any(|n| n.affinity);
        if !self.affinity.locations.is_empty() && !placing {
            warnings.push(
                "--location is given but no name has affinity: clients are not placed; \
                 add --affinity true (or affinity = true in a [[name]] table)"
                    .to_string(),
            );
        }
        warnings.extend(soa_timer_warnings(
            settings.soa_refresh,
            settings.soa_retry,
            settings.soa_expire,
            settings.soa_minimum,
        ));
        if settings.edns_udp_size > DEFAULT_EDNS_UDP_SIZE {
            warnings.push(format!(
                "--edns-udp-size {}: UDP answers above {DEFAULT_EDNS_UDP_SIZE} bytes may be \
                 fragmented, and resolvers behind firewalls that drop fragments time out \
                 instead of retrying over TCP (DNS Flag Day 2020)",
                settings.edns_udp_size
            ));
        }
        if self.forward.is_some() {
            for cidr in self
                .forward_allow
                .cidrs()
                .iter()
                .filter(|c| c.prefix_len() == 0)
            {
                warnings.push(format!(
                    "--forward-allow {cidr}: every source may have any name resolved through \
                     the --forward upstreams, an open resolver that others can use to amplify \
                     attacks; list only your clients' networks"
                ));
            }
        }
        warnings
    }
}

/// What Zonemaster reports about the SOA timers, as advice.
fn soa_timer_warnings(refresh: u32, retry: u32, expire: u32, minimum: u32) -> Vec<String> {
    let mut warnings = Vec::new();
    if refresh < CHECKER_MIN_REFRESH {
        warnings.push(format!(
            "--soa-refresh {refresh}: zone checkers want at least {CHECKER_MIN_REFRESH}"
        ));
    }
    if retry < CHECKER_MIN_RETRY || retry >= refresh {
        warnings.push(format!(
            "--soa-retry {retry}: zone checkers want at least {CHECKER_MIN_RETRY} and below \
             --soa-refresh ({refresh})"
        ));
    }
    if expire < CHECKER_MIN_EXPIRE || expire <= refresh {
        warnings.push(format!(
            "--soa-expire {expire}: zone checkers want at least {CHECKER_MIN_EXPIRE} (a week) \
             and above --soa-refresh ({refresh})"
        ));
    }
    if !(DEFAULT_SOA_MINIMUM..=CHECKER_MAX_MINIMUM).contains(&minimum) {
        warnings.push(format!(
            "--soa-minimum {minimum}: zone checkers want {DEFAULT_SOA_MINIMUM} to \
             {CHECKER_MAX_MINIMUM}; keep negative answers short with --soa-ttl instead"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;

    fn config(edit: impl FnOnce(&mut Options)) -> Config {
        let mut o = Options {
            domain: Some("alt.example".into()),
            seed: vec!["10.0.0.1".into()],
            listen: vec!["192.0.2.53:53".parse().unwrap()],
            ns: vec![
                "ns1.alt.example=192.0.2.53".into(),
                "ns2.alt.example=192.0.2.54".into(),
            ],
            ..Options::default()
        };
        edit(&mut o);
        Config::from_options(o).unwrap()
    }

    fn warnings(c: &Config) -> Vec<String> {
        let (extra, _) = c.name_rules();
        let zone = Zone::new(&c.zone).unwrap().with_names(&extra).unwrap();
        c.resolver_warnings(&zone)
    }

    #[test]
    fn the_defaults_with_two_name_servers_draw_no_warning() {
        assert_eq!(warnings(&config(|_| {})), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_named_with_its_option() {
        let warns = |edit: fn(&mut Options)| warnings(&config(edit)).join("\n");
        assert!(warns(|o| o.ns.truncate(1)).contains("--ns: one name server (ns1.alt.example)"));
        // The same name twice is one name server.
        assert!(warns(|o| o.ns[1] = "NS1.alt.example.=192.0.2.9".into())
            .contains("--ns: one name server"));
        assert!(warns(|o| o.ns[1] = "ns2.alt.example=127.0.0.1".into())
            .contains("--ns ns2.alt.example: address 127.0.0.1 is loopback"));
        assert!(warns(|o| o.soa_mname = Some("other.example".into())).contains("--soa-mname"));
        assert!(warns(|o| o.soa_refresh = Some(3600)).contains("--soa-refresh 3600"));
        assert!(warns(|o| o.soa_retry = Some(20_000)).contains("--soa-retry 20000"));
        assert!(warns(|o| o.soa_expire = Some(86_400)).contains("--soa-expire 86400"));
        assert!(warns(|o| o.soa_minimum = Some(60)).contains("--soa-minimum 60"));
        assert!(warns(|o| o.edns_udp_size = Some(4096)).contains("--edns-udp-size 4096"));
        assert!(warns(|o| {
            o.forward = vec!["127.0.0.53".into()];
            o.forward_allow = vec!["0.0.0.0/0".into()];
        })
        .contains("--forward-allow 0.0.0.0/0: every source"));
        assert!(
            warns(|o| o.locations = vec!["10.1.0.0/16=dc1/rack1".parse().unwrap()])
                .contains("--location is given but no name has affinity")
        );
        assert!(!warns(|o| {
            o.locations = vec!["10.1.0.0/16=dc1/rack1".parse().unwrap()];
            o.affinity = Some(true);
        })
        .contains("--location"));
    }

    #[test]
    fn loopback_name_servers_are_fine_for_a_loopback_server() {
        let c = config(|o| {
            o.listen = vec!["127.0.0.1:5353".parse().unwrap()];
            o.ns = vec!["ns1.alt.example=127.0.0.1".into(), "ns.example.net".into()];
        });
        assert_eq!(warnings(&c), Vec::<String>::new());
    }
}
