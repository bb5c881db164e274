use super::*;

#[test]
fn defaults_derive_from_the_domain() {
    let zone = Zone::new(&ZoneSettings::new("Alternator.Example.com")).unwrap();
    assert_eq!(zone.apex(), "alternator.example.com.");
    assert_eq!(
        zone.name_servers(),
        ["ns1.alternator.example.com.=127.0.0.1"]
    );
    assert_eq!(zone.soa.mname().to_string(), "ns1.alternator.example.com");
    assert_eq!(
        zone.soa.rname().to_string(),
        "hostmaster.alternator.example.com"
    );
    // Timers no zone checker warns about; negative answers stay short.
    assert_eq!(zone.soa.refresh().as_secs(), 14_400);
    assert_eq!(zone.soa.retry().as_secs(), 3_600);
    assert_eq!(zone.soa.expire().as_secs(), 1_209_600);
    assert_eq!(zone.soa.minimum().as_secs(), 300);
    assert_eq!(zone.negative_ttl, Ttl::from_secs(60));
}

#[test]
fn negative_answers_carry_the_smaller_of_soa_ttl_and_minimum() {
    let zone = |soa_ttl, soa_minimum| {
        Zone::new(&ZoneSettings {
            soa_ttl,
            soa_minimum,
            ..ZoneSettings::new("alt.example")
        })
        .unwrap()
        .negative_ttl
        .as_secs()
    };
    assert_eq!(zone(60, 300), 60);
    assert_eq!(zone(3600, 300), 300);
}

fn with_ns(ns: &[&str]) -> Result<Zone, ZoneError> {
    Zone::new(&ZoneSettings {
        ns: ns.iter().map(|s| s.to_string()).collect(),
        ..ZoneSettings::new("alt.example")
    })
}

#[test]
fn in_zone_name_servers_need_addresses_and_others_must_not_have_them() {
    let err = with_ns(&["ns1.alt.example"]).unwrap_err();
    assert_eq!(
        err,
        ZoneError::NsWithoutAddress {
            name: "ns1.alt.example".into(),
            apex: "alt.example".into()
        }
    );
    assert!(
        err.to_string().contains("--ns ns1.alt.example=ADDR"),
        "{err}"
    );
    assert!(matches!(
        with_ns(&["ns1.example.net=192.0.2.1"]),
        Err(ZoneError::NsAddressOutsideZone { .. })
    ));
    assert!(matches!(
        with_ns(&["ns1.alt.example=192.0.2.1,nope"]),
        Err(ZoneError::BadNs { .. })
    ));
    assert!(matches!(
        with_ns(&["alt.example=192.0.2.1"]),
        Err(ZoneError::NsIsServedName(_))
    ));
    assert_eq!(with_ns(&[]), Err(ZoneError::NoNs));
    let zone = with_ns(&[
        "NS1.alt.example.=192.0.2.1, 2001:db8::1",
        "ns1.alt.example=192.0.2.2,192.0.2.1",
        "ns.example.net",
    ])
    .unwrap();
    assert_eq!(
        zone.name_servers(),
        [
            "ns1.alt.example.=192.0.2.1,192.0.2.2,2001:db8::1",
            "ns.example.net."
        ]
    );
    // A served name cannot also be a name server.
    let zone = with_ns(&["ns1.alt.example=192.0.2.1"]).unwrap();
    assert!(matches!(
        zone.with_names(&["ns1.alt.example".into()]),
        Err(ZoneError::NsIsServedName(_))
    ));
}

#[test]
fn name_server_names_are_found_with_their_parents_as_empty_non_terminals() {
    let zone = with_ns(&["ns1.dns.alt.example=192.0.2.1", "ns.example.net"]).unwrap();
    let find = |n: &str| zone.find(&Name::vec_from_str(n).unwrap());
    assert_eq!(find("NS1.dns.alt.example"), Place::NameServer(0));
    assert_eq!(find("dns.alt.example"), Place::EmptyNonTerminal);
    assert_eq!(find("ns2.dns.alt.example"), Place::Missing);
    assert_eq!(find("ns.example.net"), Place::Outside);
}

#[test]
fn the_serial_follows_the_zone_data_and_nothing_else() {
    let serial = |settings: &ZoneSettings| Zone::new(settings).unwrap().serial();
    let base = ZoneSettings::new("alt.example");
    // Two instances with the same zone data publish the same serial.
    assert_eq!(serial(&base), serial(&base.clone()));
    assert_eq!(
        serial(&base),
        0xf17d_3266,
        "the serial must be stable across versions"
    );
    let changed = [
        ZoneSettings {
            ns: vec!["ns1.alt.example=127.0.0.2".into()],
            ..base.clone()
        },
        ZoneSettings {
            soa_rname: Some("ops.example.net".into()),
            ..base.clone()
        },
        ZoneSettings {
            soa_expire: 604_800,
            ..base.clone()
        },
        ZoneSettings {
            soa_ttl: 30,
            ..base.clone()
        },
        ZoneSettings {
            ttl: 5,
            ..base.clone()
        },
    ];
    for settings in &changed {
        assert_ne!(serial(settings), serial(&base), "{settings:?}");
    }
    let with_name = Zone::new(&base)
        .unwrap()
        .with_names(&["dc2.alt.example".into()])
        .unwrap();
    assert_ne!(with_name.serial(), serial(&base));
    // The order in which names and name servers are given does not matter.
    let two_ns = |ns: [&str; 2]| ZoneSettings {
        ns: ns.iter().map(|s| s.to_string()).collect(),
        // The SOA MNAME defaults to the first NS: the same for both.
        soa_mname: Some("ns1.alt.example".into()),
        ..base.clone()
    };
    assert_eq!(
        serial(&two_ns(["ns1.alt.example=127.0.0.1,::1", "ns.example.net"])),
        serial(&two_ns(["ns.example.net", "ns1.alt.example=::1,127.0.0.1"]))
    );
    // What is not zone data leaves it alone.
    let same = [
        ZoneSettings {
            answers: AnswerMode::All,
            ..base.clone()
        },
        ZoneSettings {
            edns_udp_size: 1400,
            ..base.clone()
        },
        ZoneSettings {
            forwarding: true,
            ..base.clone()
        },
    ];
    for settings in &same {
        assert_eq!(serial(settings), serial(&base), "{settings:?}");
    }
}

#[test]
fn bad_names_are_rejected_with_the_offending_value() {
    for bad in ["", "a..b", "has space.com", &"x".repeat(64)] {
        let err = Zone::new(&ZoneSettings::new(bad)).unwrap_err();
        assert!(err.to_string().contains("domain"), "{err}");
    }
    assert_eq!(
        Zone::new(&ZoneSettings::new(".")),
        Err(ZoneError::RootDomain)
    );
    let mut s = ZoneSettings::new("a.example");
    s.ns = vec!["ns..bad".into()];
    assert!(Zone::new(&s).unwrap_err().to_string().contains("--ns name"));
}

#[test]
fn names_are_found_case_insensitively_with_empty_non_terminals() {
    let zone = Zone::new(&ZoneSettings::new("alt.example"))
        .unwrap()
        .with_names(&["dc2.alt.example".into(), "r1.dc1.alt.example".into()])
        .unwrap();
    let find = |n: &str| zone.find(&Name::vec_from_str(n).unwrap());
    assert_eq!(find("ALT.example"), Place::Name(0));
    assert_eq!(find("Dc2.Alt.Example"), Place::Name(1));
    assert_eq!(find("r1.dc1.alt.example"), Place::Name(2));
    assert_eq!(find("dc1.alt.example"), Place::EmptyNonTerminal);
    assert_eq!(find("x.alt.example"), Place::Missing);
    assert_eq!(find("x.r1.dc1.alt.example"), Place::Missing);
    assert_eq!(find("example"), Place::Outside);
    assert_eq!(find("alt.example.org"), Place::Outside);
    assert_eq!(zone.name_text(1), "dc2.alt.example.");
}

#[test]
fn served_prefixes_match_whole_names_in_any_case() {
    let zone = Zone::new(&ZoneSettings::new("alt-1.example"))
        .unwrap()
        .with_names(&[
            "\\065b.alt-1.example".into(),
            "abcdefgh.alt-1.example".into(),
        ])
        .unwrap();
    let wire = |n: &str| {
        let mut w = Name::vec_from_str(n).unwrap().into_octets();
        w.extend_from_slice(&[0, 1, 0, 1]);
        w
    };
    let find = |n: &str| zone.served_prefix(&wire(n));
    assert_eq!(find("alt-1.example"), Some((0, 15)));
    assert_eq!(find("ALT-1.eXample"), Some((0, 15)));
    assert_eq!(find("AB.alt-1.example"), Some((1, 18)));
    assert_eq!(find("aB.alt-1.example"), Some((1, 18)));
    assert_eq!(find("abcdefGH.alt-1.EXAMPLE"), Some((2, 24)));
    // Bytes that differ only in 0x20 but are not letters do not match.
    assert_eq!(find(r"alt\0131.example"), None);
    assert_eq!(find(r"alt-\017.example"), None);
    for other in [
        "x.alt-1.example",
        "alt-1.example.org",
        "example",
        "alt-1.exampl",
    ] {
        assert_eq!(find(other), None, "{other}");
    }
    // Cut short, or a compression pointer: no match.
    assert_eq!(zone.served_prefix(&wire("alt-1.example")[..14]), None);
    assert_eq!(zone.served_prefix(&[0xc0, 12, 0, 1, 0, 1]), None);
}

#[test]
fn further_names_must_be_below_the_apex_and_distinct() {
    let zone = || Zone::new(&ZoneSettings::new("alt.example")).unwrap();
    assert!(matches!(
        zone().with_names(&["other.example".into()]),
        Err(ZoneError::NameOutsideZone { .. })
    ));
    assert!(matches!(
        zone().with_names(&["alt.example".into()]),
        Err(ZoneError::NameOutsideZone { .. })
    ));
    assert!(matches!(
        zone().with_names(&["a.alt.example".into(), "A.alt.example.".into()]),
        Err(ZoneError::DuplicateName(_))
    ));
}

#[test]
fn answer_mode_parses_numbers_and_all() {
    assert_eq!("1".parse(), Ok(AnswerMode::Random(1)));
    assert_eq!("ALL".parse(), Ok(AnswerMode::All));
    assert!("0".parse::<AnswerMode>().is_err());
    assert!("65".parse::<AnswerMode>().is_err());
    assert!("two".parse::<AnswerMode>().is_err());
}
