use super::resolve::worker_cpus;
use super::*;
use crate::dns::AnswerMode;
use crate::nodes::membership::Selector;

mod effective;

fn options(domain: &str, seed: &str) -> Options {
    Options {
        domain: Some(domain.into()),
        seed: vec![seed.into()],
        ns: vec!["ns.example.net".into()],
        ..Options::default()
    }
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alternator-dns-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::from_options(options("alternator.example.com", "10.0.0.1")).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:53".parse().unwrap()]);
    assert_eq!(c.alternator_port, 8000);
    assert_eq!(c.zone.ttl, 4);
    assert_eq!(c.zone.answers, AnswerMode::Random(1));
    assert_eq!(c.refresh_interval, Duration::from_secs(1));
    assert_eq!(c.refresh_timeout, Duration::from_secs(1));
    assert_eq!(c.io, IoMode::Auto);
    assert_eq!(c.cpus, available_cpus());
}

#[test]
fn domain_and_seed_are_required() {
    let mut o = options("a.example", "10.0.0.1");
    o.domain = None;
    assert!(matches!(
        Config::from_options(o),
        Err(ConfigError::MissingDomain)
    ));
    let mut o = options("a.example", "10.0.0.1");
    o.seed.clear();
    assert!(matches!(
        Config::from_options(o),
        Err(ConfigError::MissingSeed)
    ));
}

#[test]
fn seeds_parse_every_documented_form() {
    let seed = |s: &str| s.parse::<Seed>();
    assert_eq!(
        seed("10.0.0.1").unwrap(),
        Seed {
            host: "10.0.0.1".into(),
            port: None
        }
    );
    assert_eq!(seed("10.0.0.1:8043").unwrap().port, Some(8043));
    assert_eq!(
        seed("::1").unwrap(),
        Seed {
            host: "::1".into(),
            port: None
        }
    );
    assert_eq!(
        seed("[fd00::1]:9000").unwrap(),
        Seed {
            host: "fd00::1".into(),
            port: Some(9000)
        }
    );
    assert_eq!(seed("node1.example").unwrap().port, None);
    assert_eq!(seed("node1.example:8000").unwrap().host, "node1.example");
    for bad in [
        "",
        "10.0.0.1:0",
        "10.0.0.1:99999",
        "[fd00::1",
        "[nope]:80",
        "fd00::1::x:80",
    ] {
        assert!(seed(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn cpu_lists_and_thread_counts_are_checked() {
    assert_eq!("2-5,8".parse::<CpuList>().unwrap().0, vec![2, 3, 4, 5, 8]);
    assert!("3-1".parse::<CpuList>().is_err());
    assert!("1,1".parse::<CpuList>().is_err());
    assert!("x".parse::<CpuList>().is_err());
    let available = [0, 1, 2, 3];
    assert_eq!(
        worker_cpus(None, None, &available).unwrap(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(worker_cpus(Some(2), None, &available).unwrap(), vec![0, 1]);
    assert_eq!(
        worker_cpus(Some(6), None, &available).unwrap(),
        vec![0, 1, 2, 3, 0, 1]
    );
    assert_eq!(
        worker_cpus(None, Some(vec![3, 1]), &available).unwrap(),
        vec![3, 1]
    );
    assert_eq!(
        worker_cpus(Some(1), Some(vec![3, 1]), &available).unwrap(),
        vec![3]
    );
    let too_many = worker_cpus(Some(3), Some(vec![3, 1]), &available).unwrap_err();
    assert!(too_many.to_string().contains("--threads 3"), "{too_many}");
    let absent = worker_cpus(None, Some(vec![9]), &available).unwrap_err();
    assert!(absent.to_string().contains("CPU 9"), "{absent}");
    assert!(worker_cpus(Some(0), None, &available).is_err());
}

#[test]
fn flags_override_the_file_and_lists_replace() {
    let path = write_temp(
        "override.toml",
        r#"
domain = "file.example"
seed = ["10.0.0.1", "10.0.0.2"]
ttl = 30
answers = "all"
refresh-interval = "2s"
listen = ["127.0.0.1:5300"]
"#,
    );
    let flags = Options {
        ttl: Some(7),
        seed: vec!["10.0.0.9".into()],
        ..Options::default()
    };
    let c = Config::load(Some(&path), &flags).unwrap();
    assert_eq!(c.zone.domain, "file.example");
    assert_eq!(c.zone.ttl, 7);
    assert_eq!(c.zone.answers, AnswerMode::All);
    assert_eq!(c.refresh_interval, Duration::from_secs(2));
    assert_eq!(c.seeds.len(), 1);
    assert_eq!(c.listen, vec!["127.0.0.1:5300".parse().unwrap()]);
}

#[test]
fn unknown_keys_and_bad_values_name_the_problem() {
    let path = write_temp(
        "unknown.toml",
        "domain = \"a.example\"\nseeds = [\"10.0.0.1\"]\n",
    );
    let err = Config::load(Some(&path), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("seeds"), "{err}");
    let path = write_temp("badduration.toml", "refresh-interval = \"soon\"\n");
    let err = Config::load(Some(&path), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("soon"), "{err}");
    let path = write_temp(
        "numeric.toml",
        "domain = \"a.example\"\nseed = [\"10.0.0.1\"]\nns = [\"ns.example.net\"]\nanswers = 3\n",
    );
    assert_eq!(
        Config::load(Some(&path), &Options::default())
            .unwrap()
            .zone
            .answers,
        AnswerMode::Random(3)
    );
    let missing = Config::load(
        Some(Path::new("/nonexistent/alternator.toml")),
        &Options::default(),
    );
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
    let mut o = options("bad..name", "10.0.0.1");
    assert!(Config::from_options(o.clone())
        .unwrap_err()
        .to_string()
        .contains("bad..name"));
    o.domain = Some("ok.example".into());
    o.alternator_port = Some(0);
    assert!(Config::from_options(o).is_err());
}

#[test]
fn the_effective_toml_loads_back_to_the_same_config() {
    let mut o = options("alternator.example.com", "[fd00::1]:9000");
    o.seed.push("node.example".into());
    o.answers = Some(AnswerMode::Random(3));
    o.refresh_interval = Some(HumanDuration(Duration::from_millis(250)));
    let c = Config::from_options(o).unwrap();
    let path = write_temp("roundtrip.toml", &c.to_toml());
    let again = Config::load(Some(&path), &Options::default()).unwrap();
    assert_eq!(
        again.to_toml().lines().filter(|l| !l.is_empty()).count(),
        c.to_toml().lines().filter(|l| !l.is_empty()).count()
    );
    assert_eq!(again.seeds, c.seeds);
    assert_eq!(again.zone.answers, c.zone.answers);
    assert_eq!(again.refresh_interval, c.refresh_interval);
    assert_eq!(again.cpus, c.cpus);
}

#[test]
fn seeds_resolve_with_the_default_port() {
    let mut o = options("a.example", "127.0.0.1");
    o.seed.push("localhost:9000".into());
    o.seed.push("no-such-host.invalid".into());
    let c = Config::from_options(o).unwrap();
    let (addrs, failures) = c.resolve_seeds();
    assert!(addrs.contains(&"127.0.0.1:8000".parse().unwrap()));
    assert!(addrs.iter().any(|a| a.port() == 9000));
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("no-such-host.invalid"));
}

#[test]
fn names_come_from_flags_and_tables_with_the_apex_first() {
    assert_eq!(
        "dc2.alt.example=dc2".parse::<NameSpec>().unwrap(),
        NameSpec {
            name: "dc2.alt.example".into(),
            dc: Some("dc2".into()),
            rack: None,
            fallback: true,
            affinity: None,
        }
    );
    let spec: NameSpec = "r1.dc1.alt.example=dc1/r1".parse().unwrap();
    assert_eq!(
        (spec.dc.as_deref(), spec.rack.as_deref()),
        (Some("dc1"), Some("r1"))
    );
    for bad in ["no-equals", "=dc1", "x.alt.example="] {
        assert!(bad.parse::<NameSpec>().is_err(), "{bad:?} accepted");
    }
    let path = write_temp(
        "names.toml",
        r#"
domain = "alt.example"
seed = ["10.0.0.1"]
ns = ["ns.example.net"]
[[name]]
name = "dc2.alt.example"
dc = "dc2"
[[name]]
name = "r1.dc1.alt.example"
dc = "dc1"
rack = "r1"
fallback = false
"#,
    );
    let c = Config::load(Some(&path), &Options::default()).unwrap();
    let (extra, rules) = c.name_rules();
    assert_eq!(extra, vec!["dc2.alt.example", "r1.dc1.alt.example"]);
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].selector, Selector::default());
    assert_eq!(rules[1].selector.dc.as_deref(), Some("dc2"));
    assert!(rules[1].fallback && !rules[2].fallback);
    // And back through --check's TOML.
    let again = write_temp("names-again.toml", &c.to_toml());
    let c2 = Config::load(Some(&again), &Options::default()).unwrap();
    assert_eq!(c2.names, c.names);
}

#[test]
fn bad_names_and_table_keys_are_rejected_by_name() {
    let path = write_temp(
        "badname.toml",
        "domain = \"alt.example\"\nseed = [\"10.0.0.1\"]\nns = [\"ns.example.net\"]\n[[name]]\nname = \"x.alt.example\"\ndatacenter = \"dc2\"\n",
    );
    let err = Config::load(Some(&path), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("datacenter"), "{err}");
    let mut o = options("alt.example", "10.0.0.1");
    o.names = vec!["other.example=dc2".parse().unwrap()];
    let err = Config::from_options(o).unwrap_err().to_string();
    assert!(
        err.contains("other.example") && err.contains("not below"),
        "{err}"
    );
    // A [[name]] for the apex itself changes the apex's selector.
    let mut o = options("alt.example", "10.0.0.1");
    o.names = vec!["ALT.example.=dc3".parse().unwrap()];
    let c = Config::from_options(o).unwrap();
    let (extra, rules) = c.name_rules();
    assert!(extra.is_empty());
    assert_eq!(rules[0].selector.dc.as_deref(), Some("dc3"));
}

#[test]
fn tls_options_need_https_and_pair_up() {
    let mut o = options("alt.example", "10.0.0.1");
    o.ca_file = Some("/tmp/ca.pem".into());
    let err = Config::from_options(o.clone()).unwrap_err().to_string();
    assert!(err.contains("https"), "{err}");
    o.alternator_scheme = Some(Scheme::Https);
    let c = Config::from_options(o.clone()).unwrap();
    assert_eq!(c.alternator_port, 8043, "https defaults to 8043");
    o.client_cert = Some("/tmp/c.pem".into());
    let err = Config::from_options(o).unwrap_err().to_string();
    assert!(err.contains("client-key"), "{err}");
}

#[test]
fn health_settings_have_defaults_and_bounds() {
    let c = Config::from_options(options("alt.example", "10.0.0.1")).unwrap();
    assert!(c.health.enabled);
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!(c.health.timeout, Duration::from_millis(300));
    assert_eq!(c.health.failures, 2);
    let mut o = options("alt.example", "10.0.0.1");
    o.health_failures = Some(0);
    assert!(Config::from_options(o).is_err());
    let mut o = options("alt.example", "10.0.0.1");
    o.health_check = Some(false);
    assert!(!Config::from_options(o).unwrap().health.enabled);
}

#[test]
fn the_default_name_server_is_inside_the_zone_at_the_listen_addresses() {
    let mut o = options("Alt.example.", "10.0.0.1");
    o.ns.clear();
    o.listen = vec![
        "127.0.0.1:5353".parse().unwrap(),
        "[::1]:5353".parse().unwrap(),
        "127.0.0.1:53".parse().unwrap(),
    ];
    let c = Config::from_options(o.clone()).unwrap();
    assert_eq!(c.zone.ns, ["ns1.alt.example=127.0.0.1,::1"]);
    // A wildcard address says nothing of where resolvers reach us: --ns is
    // required, and the error says what to give.
    o.listen.push("0.0.0.0:53".parse().unwrap());
    let err = Config::from_options(o).unwrap_err().to_string();
    assert!(
        err.contains("--ns is needed") && err.contains("--ns ns1.alt.example=192.0.2.53"),
        "{err}"
    );
    // The documented default listen address is a wildcard.
    let mut o = options("alt.example", "10.0.0.1");
    o.ns.clear();
    assert!(Config::from_options(o).is_err());
}

#[test]
fn name_servers_and_soa_timers_are_set_and_printed_back() {
    let mut o = options("alt.example", "10.0.0.1");
    o.ns = vec![
        "ns1.alt.example=192.0.2.1".into(),
        "ns2.alt.example=192.0.2.2".into(),
    ];
    o.soa_refresh = Some(86_400);
    o.soa_minimum = Some(600);
    o.resolver_answers = Some(AnswerMode::All);
    let c = Config::from_options(o).unwrap();
    let toml = c.to_toml();
    for line in [
        r#"ns = ["ns1.alt.example=192.0.2.1", "ns2.alt.example=192.0.2.2"]"#,
        "soa-refresh = 86400",
        "soa-retry = 3600",
        "soa-expire = 1209600",
        "soa-minimum = 600",
        r#"resolver-answers = "all""#,
    ] {
        assert!(toml.lines().any(|l| l == line), "{line} not in\n{toml}");
    }
    let path = write_temp("ns.toml", &toml);
    let again = Config::load(Some(&path), &Options::default()).unwrap();
    assert_eq!(again.zone, c.zone);
    // An in-zone name server without an address stops the start, naming --ns.
    let mut o = options("alt.example", "10.0.0.1");
    o.ns = vec!["ns1.alt.example".into()];
    let err = Config::from_options(o).unwrap_err().to_string();
    assert!(err.contains("--ns ns1.alt.example"), "{err}");
}

#[test]
fn forwarding_answers_only_loopback_unless_told_otherwise() {
    let mut o = options("a.example", "10.0.0.1");
    o.forward = vec!["127.0.0.53".into()];
    let c = Config::from_options(o.clone()).unwrap();
    let loopback = ["127.0.0.1", "127.1.2.3", "::1"];
    for ip in loopback {
        assert!(c.forward_allow.allows(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["10.0.0.7", "192.0.2.1", "fd00::1"] {
        assert!(!c.forward_allow.allows(ip.parse().unwrap()), "{ip}");
    }
    let printed: toml::Table = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(
        printed["forward-allow"].as_array().unwrap().len(),
        2,
        "{printed}"
    );

    // A list replaces the default.
    o.forward_allow = vec!["10.0.0.0/8".into()];
    let c = Config::from_options(o.clone()).unwrap();
    assert!(c.forward_allow.allows("10.1.2.3".parse().unwrap()));
    assert!(!c.forward_allow.allows("127.0.0.1".parse().unwrap()));

    // Named in the errors.
    o.forward_allow = vec!["10.0.0.1/8".into()];
    let err = Config::from_options(o.clone()).unwrap_err().to_string();
    assert!(err.contains("--forward-allow"), "{err}");
    o.forward.clear();
    o.forward_allow = vec!["10.0.0.0/8".into()];
    let err = Config::from_options(o).unwrap_err().to_string();
    assert!(
        err.contains("--forward-allow") && err.contains("--forward"),
        "{err}"
    );
}

#[test]
fn the_file_and_the_flags_give_forward_allow_alike() {
    let file = write_temp(
        "forward-allow.toml",
        "domain = \"a.example\"\nseed = [\"10.0.0.1\"]\nns = [\"ns.example.net\"]\n\
         forward = [\"127.0.0.53\"]\nforward-allow = [\"192.0.2.0/24\"]\n",
    );
    let c = Config::load(Some(&file), &Options::default()).unwrap();
    assert!(c.forward_allow.allows("192.0.2.9".parse().unwrap()));
    let flags = Options {
        forward_allow: vec!["198.51.100.0/24".into()],
        ..Options::default()
    };
    let c = Config::load(Some(&file), &flags).unwrap();
    assert!(!c.forward_allow.allows("192.0.2.9".parse().unwrap()));
    assert!(c.forward_allow.allows("198.51.100.9".parse().unwrap()));
}

#[test]
fn the_sample_config_loads_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/alternator-dns.toml");
    // Every key is commented out in the sample: the required ones come as flags.
    let c = Config::load(Some(&path), &options("alternator.example.com", "10.0.0.1")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let documented: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#')?.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && !key.contains(char::is_whitespace))
        .collect();
    let mut o = options("alternator.example.com", "10.0.0.1");
    o.forward = vec!["127.0.0.53".into()];
    o.rate_limit = Some(100);
    o.user = Some("nobody".into());
    let effective: toml::Table =
        toml::from_str(&Config::from_options(o).unwrap().to_toml()).unwrap();
    let effective_default: toml::Table = toml::from_str(&c.to_toml()).unwrap();
    assert!(effective.len() > 30, "{effective:?}");
    for key in effective.keys().chain(effective_default.keys()) {
        assert!(
            documented.contains(key.as_str()),
            "dist/alternator-dns.toml does not show `{key}`"
        );
    }
}

#[test]
fn flags_replace_what_they_give_and_keep_every_other_key_of_the_file() {
    let mut o = options("alt.example", "10.0.0.1");
    o.forward = vec!["127.0.0.53".into()];
    o.rate_limit = Some(100);
    o.answers = Some(AnswerMode::All);
    let file: Options = toml::from_str(&Config::from_options(o).unwrap().to_toml()).unwrap();
    let flags = Options {
        ttl: Some(9),
        seed: vec!["10.9.9.9".into(), "10.9.9.8".into()],
        ..Options::default()
    };
    let merged = merge(file.clone(), flags).unwrap();
    assert_eq!(merged.ttl, Some(9));
    assert_eq!(merged.seed, ["10.9.9.9", "10.9.9.8"]);
    let table = |o: &Options| toml::Table::try_from(o).unwrap();
    let (mut want, got) = (table(&file), table(&merged));
    want.insert("ttl".into(), 9.into());
    want.insert("seed".into(), toml::Value::try_from(&merged.seed).unwrap());
    assert_eq!(got, want);
    // No flag at all: the file as it is.
    assert_eq!(
        table(&merge(file.clone(), Options::default()).unwrap()),
        table(&file)
    );
}
