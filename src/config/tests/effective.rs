//! The effective configuration: what `--check` prints, byte for byte, and
//! what a reload keeps of the running one.

use super::*;
use crate::config::restart::RESTART_ONLY;

/// Options that set every key `to_toml` can print, several in a form that
/// it normalises (a seed's brackets, a forwarder's port, a CIDR's spacing).
fn every_option() -> Options {
    let cpu = available_cpus()[0];
    Options {
        listen: vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:5353".parse().unwrap(),
        ],
        seed: vec![
            " 10.0.0.1 ".into(),
            "[fd00::1]:9000".into(),
            "fd00::2".into(),
            "node.example:8443".into(),
        ],
        names: vec![
            "dc2.alt.example=dc2".parse().unwrap(),
            "r1.alt.example=dc1/r1".parse().unwrap(),
        ],
        alternator_port: Some(9443),
        alternator_scheme: Some(Scheme::Https),
        client_cert: Some("/etc/alternator-dns/client.pem".into()),
        client_key: Some("/etc/alternator-dns/client.key".into()),
        tls_server_name: Some("nodes.example".into()),
        tls_insecure_skip_verify: Some(true),
        health_interval: Some(HumanDuration(Duration::from_millis(750))),
        health_failures: Some(3),
        health_flap_limit: Some(4),
        health_flap_window: Some(HumanDuration(Duration::from_secs(120))),
        health_flap_passes: Some(3),
        exclude: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
        ttl: Some(0),
        answers: Some(AnswerMode::Random(2)),
        refresh_timeout: Some(HumanDuration(Duration::from_secs(90))),
        threads: Some(1),
        cpus: Some(CpuList(vec![cpu])),
        io: Some(IoMode::Mmsg),
        ns: vec!["ns1.alt.example=127.0.0.1".into()],
        soa_mname: Some("ns1.alt.example".into()),
        soa_rname: Some("ops.example".into()),
        tcp_max_connections: Some(7),
        forward: vec!["127.0.0.53".into(), "[::1]:5300".into()],
        forward_allow: vec!["10.0.0.0/8".into()],
        metrics_listen: Some("".into()),
        user: Some("nobody".into()),
        allow: vec!["127.0.0.0/8".into(), "fd00::/8".into()],
        denied: Some(Denied::Drop),
        rate_limit: Some(50),
        log_format: Some(LogFormat::Json),
        log_level: Some("debug".into()),
        ..options("alt.example", "ignored")
    }
}

#[test]
fn the_effective_toml_is_every_key_with_its_effective_value() {
    let cpu = available_cpus()[0];
    let c = Config::from_options(every_option()).unwrap();
    let want = format!(
        r#"listen = ["127.0.0.1:5353", "[::1]:5353"]
domain = "alt.example"
seed = ["10.0.0.1", "[fd00::1]:9000", "fd00::2", "node.example:8443"]
affinity = false
affinity-min-nodes = 1
client-subnet = true
alternator-port = 9443
alternator-scheme = "https"
client-cert = "/etc/alternator-dns/client.pem"
client-key = "/etc/alternator-dns/client.key"
tls-server-name = "nodes.example"
tls-insecure-skip-verify = true
health-check = true
health-interval = "750ms"
health-timeout = "300ms"
health-failures = 3
health-flap-limit = 4
health-flap-window = "2m"
health-flap-passes = 3
exclude = ["10.0.0.9", "fd00::9"]
ttl = 0
answers = "2"
refresh-interval = "1s"
refresh-timeout = "1m 30s"
threads = 1
cpus = "{cpu}"
io = "mmsg"
resolver-answers = "2"
ns = ["ns1.alt.example=127.0.0.1"]
soa-mname = "ns1.alt.example"
soa-rname = "ops.example"
soa-ttl = 60
soa-refresh = 14400
soa-retry = 3600
soa-expire = 1209600
soa-minimum = 300
edns-udp-size = 1232
tcp-idle-timeout = "10s"
tcp-max-connections = 7
forward = ["127.0.0.53:53", "[::1]:5300"]
forward-timeout = "1s"
forward-max-outstanding = 1024
forward-allow = ["10.0.0.0/8"]
metrics-listen = ""
user = "nobody"
allow = ["127.0.0.0/8", "fd00::/8"]
denied = "drop"
rate-limit = 50
rate-limit-slip = 2
log-format = "json"
log-level = "debug"

[[name]]
name = "dc2.alt.example"
dc = "dc2"
fallback = true

[[name]]
name = "r1.alt.example"
dc = "dc1"
rack = "r1"
fallback = true
"#
    );
    assert_eq!(c.to_toml(), want);

    // The defaults, all printed.
    let c = Config::from_options(options("alternator.example.com", "10.0.0.1")).unwrap();
    let cpus = available_cpus();
    let want = format!(
        r#"listen = ["0.0.0.0:53"]
domain = "alternator.example.com"
seed = ["10.0.0.1"]
affinity = false
affinity-min-nodes = 1
client-subnet = true
alternator-port = 8000
alternator-scheme = "http"
tls-insecure-skip-verify = false
health-check = true
health-interval = "500ms"
health-timeout = "300ms"
health-failures = 2
health-flap-limit = 3
health-flap-window = "1m"
health-flap-passes = 5
ttl = 4
answers = "1"
refresh-interval = "1s"
refresh-timeout = "1s"
threads = {}
cpus = "{}"
io = "auto"
resolver-answers = "1"
ns = ["ns.example.net"]
soa-ttl = 60
soa-refresh = 14400
soa-retry = 3600
soa-expire = 1209600
soa-minimum = 300
edns-udp-size = 1232
tcp-idle-timeout = "10s"
tcp-max-connections = 1024
metrics-listen = "127.0.0.1:9153"
denied = "refuse"
rate-limit = 0
log-format = "text"
log-level = "info"
"#,
        cpus.len(),
        CpuList(cpus.clone())
    );
    assert_eq!(c.to_toml(), want);
}

/// `every_option` with every restart-only option changed, and the TTL.
fn every_restart_only_option_changed() -> Options {
    Options {
        listen: vec!["127.0.0.1:5354".parse().unwrap()],
        threads: None,
        cpus: None,
        io: Some(IoMode::Uring),
        metrics_listen: Some("127.0.0.1:9999".into()),
        user: None,
        tcp_idle_timeout: Some(HumanDuration(Duration::from_secs(5))),
        tcp_max_connections: Some(8),
        forward: vec!["127.0.0.54".into()],
        forward_timeout: Some(HumanDuration(Duration::from_secs(2))),
        forward_max_outstanding: Some(10),
        log_format: Some(LogFormat::Text),
        log_level: Some("warn".into()),
        ttl: Some(9),
        ..every_option()
    }
}

#[test]
fn a_reload_keeps_and_names_every_restart_only_setting() {
    let running = Config::from_options(every_option()).unwrap();
    let mut new = Config::from_options(every_restart_only_option_changed()).unwrap();
    let changed = new.keep_restart_only(&running);
    let one_cpu = available_cpus().len() == 1;
    let want: Vec<&str> = RESTART_ONLY
        .iter()
        .map(|(name, _)| *name)
        // With one CPU there is no other choice of CPUs to change to.
        .filter(|name| !(one_cpu && ["threads", "cpus"].contains(name)))
        .collect();
    assert_eq!(changed, want);

    // The typed settings are the running ones ...
    assert_eq!(new.listen, running.listen);
    assert_eq!(new.cpus, running.cpus);
    assert_eq!(new.io, running.io);
    assert_eq!(new.metrics_listen, running.metrics_listen);
    assert_eq!(new.user, running.user);
    assert_eq!(new.tcp, running.tcp);
    assert_eq!(new.forward, running.forward);
    assert_eq!(new.zone.forwarding, running.zone.forwarding);
    assert_eq!(new.log_format, running.log_format);
    assert_eq!(new.log_level, running.log_level);
    // ... and so are the printed ones; what a reload changes is changed.
    assert_eq!(new.zone.ttl, 9);
    assert_eq!(
        new.to_toml(),
        running.to_toml().replace("\nttl = 0\n", "\nttl = 9\n")
    );

    // Nothing changed: nothing named, nothing put back.
    let mut same = Config::from_options(every_option()).unwrap();
    assert_eq!(same.keep_restart_only(&running), Vec::<&str>::new());
    assert_eq!(same.to_toml(), running.to_toml());
}

#[test]
fn forwarding_kept_off_by_a_reload_prints_no_forward_allow() {
    let running = Config::from_options(options("a.example", "10.0.0.1")).unwrap();
    let mut o = options("a.example", "10.0.0.1");
    o.forward = vec!["127.0.0.53".into()];
    o.forward_allow = vec!["10.0.0.0/8".into()];
    let mut new = Config::from_options(o).unwrap();
    assert_eq!(
        new.keep_restart_only(&running),
        ["forward", "forward-timeout", "forward-max-outstanding"]
    );
    assert!(new.forward.is_none() && !new.zone.forwarding);
    // What it prints loads: no --forward-allow without --forward.
    assert_eq!(new.to_toml(), running.to_toml());
}

#[test]
fn every_restart_only_name_is_the_key_of_its_option() {
    let printed: toml::Table =
        toml::from_str(&Config::from_options(every_option()).unwrap().to_toml()).unwrap();
    for (name, field) in RESTART_ONLY {
        assert_eq!(*name, field.replace('_', "-"));
        assert!(printed.contains_key(*name), "{name} is not an option");
    }
}

#[test]
fn a_reload_takes_the_access_list_denied_policy_and_rate_limit() {
    let running = Config::from_options(every_option()).unwrap();
    let mut new = Config::from_options(Options {
        allow: Vec::new(),
        denied: Some(Denied::Refuse),
        rate_limit: Some(60),
        rate_limit_slip: Some(3),
        exclude: Vec::new(),
        ..every_option()
    })
    .unwrap();
    assert_eq!(new.keep_restart_only(&running), Vec::<&str>::new());
    assert_ne!(new.access, running.access);
    assert_ne!(new.denied, running.denied);
    assert_ne!(new.rate_limit, running.rate_limit);
    assert_ne!(new.exclude, running.exclude);
}
