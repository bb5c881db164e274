//! Reloads (SIGHUP): checked first, so that one leaving a served name with
//! no node is rejected and changes nothing; then applied, each name keeping
//! what it serves while the new rules take over.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{
    needed_selectors, view, Basis, Choice, Effects, Locations, Round, Snapshot, Tracker,
    TrackerSettings,
};
use crate::dns::Zone;
use crate::nodes::membership::{LocationChoice, NameRule};

/// A reload not applied: it would leave a served name with no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} would serve no node: each node it could serve ({}) is excluded; keep one of them \
     out of `exclude`",
    serves.join(", ")
)]
pub struct ReloadRejected {
    pub name: String,
    /// What it serves now.
    pub serves: Vec<String>,
}

impl Tracker {
    /// Whether a new configuration may be applied: not when it would leave a
    /// name that serves nodes now with none (every node it could serve
    /// excluded).
    pub fn check_reload(
        &self,
        zone: &Arc<Zone>,
        settings: &TrackerSettings,
    ) -> Result<(), ReloadRejected> {
        let mut trial = self.membership.clone();
        trial.reconfigure(settings.health, settings.exclude.clone());
        let kept = kept_sets(&self.current, Arc::clone(zone));
        for (i, rule) in settings.names.iter().enumerate() {
            let served_now: BTreeSet<IpAddr> = kept.set_nodes(i).collect();
            let (nodes, choice) = trial.serve(rule, &served_now);
            let left = match choice {
                Choice::Pending | Choice::Empty => served_now
                    .iter()
                    .filter(|ip| !trial.is_excluded(**ip))
                    .count(),
                _ => nodes.len(),
            };
            if left == 0 && !served_now.is_empty() {
                return Err(ReloadRejected {
                    name: view::name_without_dot(zone.name_text(i)),
                    serves: served_now.iter().map(ToString::to_string).collect(),
                });
            }
        }
        Ok(())
    }

    /// Applies a new configuration (SIGHUP): publishes a snapshot of the new
    /// zone in which each name keeps the nodes it served (a new name starts
    /// with the apex's), takes the new rules and settings, restarts every
    /// prober (the shell has a new client for them), republishes under the
    /// new rules, and makes a polling round due now. The shell abandons the
    /// round under way, if any, and ignores what it queued. Returns the
    /// generation of the first snapshot of the new zone.
    pub fn reload(
        &mut self,
        zone: Arc<Zone>,
        settings: TrackerSettings,
        now: Instant,
        fx: &mut impl Effects,
    ) -> u64 {
        let mut locations = Locations::new(settings.locations);
        locations.carry(&self.locations);
        let kept = kept_sets(&self.current, zone);
        let kept = self.kept_locations(kept, &locations, &settings.names);
        let generation = kept.generation;
        self.store(Arc::new(kept), fx);

        self.locations = locations;
        self.selectors = needed_selectors(&settings.names, &self.locations);
        self.names = settings.names;
        self.health = settings.health;
        self.interval = settings.refresh.interval;
        self.metrics = settings.metrics;
        self.membership
            .reconfigure(settings.health, settings.exclude);
        self.membership.keep_only(&self.selectors);
        for node in std::mem::take(&mut self.probing) {
            fx.stop_probing(node);
        }
        self.probe_failures.clear();
        let listed: Vec<IpAddr> = self.membership.all_listed().into_iter().collect();
        self.sync_probers(&listed, fx);
        self.last_choice.clear();
        self.round_failure = None;
        self.recovery = None;
        self.round = Round::Due(now);
        self.publish(None, now, fx);
        generation
    }
}

impl Tracker {
    /// `kept` with each location of `locations` keeping the nodes the same
    /// location's clients get now (none for a new one), answered by the
    /// names of `names` that place their clients there.
    fn kept_locations(
        &self,
        kept: Snapshot,
        locations: &Locations,
        names: &[NameRule],
    ) -> Snapshot {
        let current = &self.current;
        let sets: Vec<Vec<IpAddr>> = (0..locations.len())
            .map(|j| {
                let old = (0..self.locations.len())
                    .filter(|&k| k < current.location_count())
                    .find(|&k| self.locations.selector(k) == locations.selector(j));
                old.map_or_else(Vec::new, |k| current.location_set(k).iter().collect())
            })
            .collect();
        kept.with_locations(&sets, |name, location| {
            names[name].serves_location(locations.serving(location, &LocationChoice::Pending))
        })
    }
}

/// A snapshot of `zone` in which each name keeps the nodes `current` serves
/// for the same name (a new name gets the apex's).
fn kept_sets(current: &Snapshot, zone: Arc<Zone>) -> Snapshot {
    let old: Vec<usize> = (0..zone.name_count())
        .map(|i| {
            let name = zone.name_text(i);
            (0..current.zone.name_count())
                .find(|&j| current.zone.name_text(j) == name)
                .unwrap_or(0)
        })
        .collect();
    let sets: Vec<Vec<IpAddr>> = old
        .iter()
        .map(|&j| current.set_nodes(j).collect())
        .collect();
    let bases: Vec<Basis> = old.iter().map(|&j| current.basis(j)).collect();
    Snapshot::with_sets(current.generation + 1, zone, current.source, &sets).with_bases(&bases)
}
