//! The options of zone-local answers: `--location`, `--affinity`,
//! `--affinity-min-nodes` and `--client-subnet`, checked into what the
//! answer path (a [`Placement`]) and the node tracker (the locations' lists
//! to poll) run with.

use std::collections::BTreeMap;

use super::{ConfigError, LocationSpec, Options};
use crate::access::Cidr;
use crate::dns::placement::{LocationRule, Placement};
use crate::nodes::membership::{NameRule, Selector};
use crate::nodes::tracker::LocationTargets;

/// The most distinct locations: their indexes are 16 bits, one value kept
/// for "none".
const MAX_LOCATIONS: usize = u16::MAX as usize - 1;

/// Zone-local answers, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinitySettings {
    /// The distinct locations, in the order of their indexes (first given
    /// first), each as the selector of its rack or datacenter.
    pub locations: Vec<Selector>,
    /// Every prefix, with its location's index.
    pub rules: Vec<LocationRule>,
    /// `--affinity`: whether the domain itself places its clients.
    pub domain: bool,
    /// Fewer live nodes than this and a rack (then a datacenter) counts as
    /// having none.
    pub min_nodes: usize,
    /// Whether queries' ECS options are read.
    pub client_subnet: bool,
}

impl AffinitySettings {
    /// What the answer path places clients with, for served names `names`
    /// (one rule each, in the zone's order).
    pub fn placement(&self, names: &[NameRule]) -> Placement {
        let affinity = names.iter().map(|n| n.affinity).collect();
        Placement::new(&self.rules, affinity, self.client_subnet)
    }

    /// The locations whose lists the node tracker keeps for served names
    /// `names`: none unless some name places its clients.
    pub fn targets(&self, names: &[NameRule]) -> LocationTargets {
        let placing = names.iter().any(|n| n.affinity);
        LocationTargets {
            selectors: match placing {
                true => self.locations.clone(),
                false => Vec::new(),
            },
            min_nodes: self.min_nodes,
        }
    }
}

/// Reads the options, filling in their defaults.
pub(super) fn resolve(o: &mut Options) -> Result<AffinitySettings, ConfigError> {
    let domain = *o.affinity.get_or_insert(false);
    let min_nodes = *o.affinity_min_nodes.get_or_insert(1);
    let client_subnet = *o.client_subnet.get_or_insert(true);
    if min_nodes == 0 {
        return Err(ConfigError::Invalid(
            "--affinity-min-nodes must be at least 1".into(),
        ));
    }
    let (locations, rules) = location_table(&o.locations)?;
    let named = o.names.iter().find(|n| n.affinity == Some(true));
    if locations.is_empty() && (domain || named.is_some()) {
        let which = match named {
            Some(n) if !domain => format!("affinity = true for name {:?}", n.name),
            _ => "--affinity".to_string(),
        };
        return Err(ConfigError::Invalid(format!(
            "{which} needs at least one --location CIDR=DC[/RACK] saying where clients are \
             (e.g. --location 10.1.0.0/16=dc1/rack1)"
        )));
    }
    Ok(AffinitySettings {
        locations,
        rules,
        domain,
        min_nodes: min_nodes as usize,
        client_subnet,
    })
}

/// The distinct locations and every prefix's rule; a prefix given for two
/// different locations is an error.
fn location_table(
    specs: &[LocationSpec],
) -> Result<(Vec<Selector>, Vec<LocationRule>), ConfigError> {
    let mut locations: Vec<Selector> = Vec::new();
    let mut seen: BTreeMap<String, (Cidr, String)> = BTreeMap::new();
    let mut rules = Vec::new();
    for spec in specs {
        let selector = Selector {
            dc: Some(spec.dc.clone()),
            rack: spec.rack.clone(),
        };
        let index = match locations.iter().position(|l| *l == selector) {
            Some(index) => index,
            None => {
                locations.push(selector);
                locations.len() - 1
            }
        };
        if locations.len() > MAX_LOCATIONS {
            return Err(ConfigError::Invalid(format!(
                "--location: more than {MAX_LOCATIONS} distinct locations"
            )));
        }
        for cidr in &spec.cidr {
            if let Some((_, other)) = seen.get(&cidr.to_string()) {
                if *other != spec.place() {
                    return Err(ConfigError::Invalid(format!(
                        "--location {cidr} is given for two locations, {other} and {}",
                        spec.place()
                    )));
                }
                continue;
            }
            seen.insert(cidr.to_string(), (*cidr, spec.place()));
            rules.push(LocationRule {
                cidr: *cidr,
                // Below MAX_LOCATIONS, checked above.
                location: index as u16,
            });
        }
    }
    Ok((locations, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(locations: &[&str], affinity: bool) -> Options {
        Options {
            locations: locations.iter().map(|l| l.parse().unwrap()).collect(),
            affinity: Some(affinity),
            ..Options::default()
        }
    }

    #[test]
    fn locations_are_numbered_once_each_in_order() {
        let mut o = options(
            &[
                "10.1.0.0/16=dc1/rack1",
                "10.2.0.0/16=dc1/rack2",
                "10.3.0.0/16=dc1/rack1",
                "fd00::/8=dc2",
            ],
            true,
        );
        let settings = resolve(&mut o).unwrap();
        let names: Vec<String> = settings.locations.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["dc=dc1 rack=rack1", "dc=dc1 rack=rack2", "dc=dc2"]);
        let indexes: Vec<u16> = settings.rules.iter().map(|r| r.location).collect();
        assert_eq!(indexes, [0, 1, 0, 2]);
        assert_eq!((settings.min_nodes, settings.client_subnet), (1, true));
        assert_eq!(o.affinity_min_nodes, Some(1), "the default is written back");
    }

    #[test]
    fn bad_combinations_are_refused_with_the_reason() {
        let err = |o: &mut Options| resolve(o).unwrap_err().to_string();
        let e = err(&mut options(&[], true));
        assert!(
            e.contains("--affinity needs at least one --location"),
            "{e}"
        );
        let e = err(&mut options(&["10.0.0.0/8=dc1", "10.0.0.0/8=dc2"], true));
        assert!(
            e.contains("10.0.0.0/8 is given for two locations, dc1 and dc2"),
            "{e}"
        );
        let mut o = options(&["10.0.0.0/8=dc1"], true);
        o.affinity_min_nodes = Some(0);
        assert!(err(&mut o).contains("--affinity-min-nodes must be at least 1"));
        // The same prefix twice for one location is harmless.
        assert!(resolve(&mut options(&["10.0.0.0/8=dc1", "10.0.0.0/8=dc1"], true)).is_ok());
        // Locations without affinity: nothing is placed, nothing refused.
        assert!(resolve(&mut options(&["10.0.0.0/8=dc1"], false)).is_ok());
    }

    #[test]
    fn location_flags_parse_or_say_what_is_expected() {
        let spec: LocationSpec = "fd00:1::/48=dc1/rack 1".parse().unwrap();
        assert_eq!(spec.place(), "dc1/rack 1");
        for bad in [
            "10.0.0.0/8",
            "10.0.0.0/8=",
            "10.0.0.0/8=dc1/",
            "10.0.0.1/8=dc1",
        ] {
            assert!(bad.parse::<LocationSpec>().is_err(), "{bad}");
        }
        let e = "10.0.0.1/8=dc1".parse::<LocationSpec>().unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn location_and_name_tables_load_from_toml() {
        let text = r#"
            affinity-min-nodes = 2
            [[name]]
            name = "dc1.alt.example"
            dc = "dc1"
            affinity = true
            [[location]]
            cidr = ["10.1.0.0/16", "fd00:1::/48"]
            dc = "dc1"
            rack = "rack1"
            [[location]]
            cidr = "10.2.0.0/16"
            dc = "dc2"
        "#;
        let mut o: Options = toml::from_str(text).unwrap();
        assert_eq!(o.names[0].affinity, Some(true));
        let settings = resolve(&mut o).unwrap();
        assert_eq!((settings.domain, settings.min_nodes), (false, 2));
        assert_eq!(settings.rules.len(), 3);
        let bad = "[[location]]\ncidr = []\ndc = \"dc1\"\n";
        let e = toml::from_str::<Options>(bad).unwrap_err().to_string();
        assert!(e.contains("a [[location]] needs cidr"), "{e}");
        let typo = "[[location]]\ncidr = \"10.0.0.0/8\"\ndc = \"dc1\"\nrak = \"r1\"\n";
        let e = toml::from_str::<Options>(typo).unwrap_err().to_string();
        assert!(e.contains("rak"), "{e}");
    }
}
