//! Degraded states, made visible.
//!
//! Two states keep the server answering with nodes it cannot vouch for:
//! - **unverified seeds**: no `/localnodes` answer has confirmed the seeds
//!   it serves (the cluster is unreachable, or the TLS settings are wrong);
//! - **fail open**: every candidate node of a name fails its health checks,
//!   and the name serves them anyway.
//!
//! Each is carried by the snapshot ([`Basis`] per name), so what the gauges
//! and `/readyz` report is always what the workers serve. While one lasts,
//! the node tracker logs an ERROR naming the cause and the flag to check, at
//! most once per [`REMIND_EVERY`] ([`Reminder`]).
//!
//! `/readyz` ([`readyz`]) fails (503) when the server cannot give an answer
//! it has verified: a UDP worker is not running, the domain has no node to
//! answer with, or only unverified seeds are served. Fail open keeps it ready
//! (200), with the names in the body: the nodes are the cluster's own, and
//! taking every instance out of rotation would leave clients with nothing.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::snapshot::{Basis, Snapshot};
use crate::metrics::{Readyz, SnapshotFacts};

/// Least time between two log lines about the same degraded state.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Rate-limits the log lines of one degraded state.
#[derive(Debug, Default)]
pub struct Reminder {
    last: Option<Instant>,
}

impl Reminder {
    /// Whether a line is due at `now` (the first always is, then one per
    /// [`REMIND_EVERY`]); when it is, `now` is remembered.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < REMIND_EVERY => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// The state ended: the next time it begins is logged at once.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

/// Whether some name serves seeds no `/localnodes` answer has confirmed.
pub fn serves_unverified_seeds(snapshot: &Snapshot) -> bool {
    snapshot.bases().contains(&Basis::Seeds)
}

/// The names serving nodes that fail their health checks (without the
/// final dot).
pub fn fail_open_names(snapshot: &Snapshot) -> Vec<String> {
    (0..snapshot.zone.name_count())
        .filter(|&i| snapshot.basis(i) == Basis::FailOpen)
        .map(|i| snapshot.zone.name_text(i).trim_end_matches('.').to_string())
        .collect()
}

/// What the metrics report about `snapshot`: per name, the nodes served that
/// pass their checks and those served in fail open; whether seeds are
/// served unverified.
pub fn facts(snapshot: &Snapshot, age: Option<Duration>) -> SnapshotFacts {
    let mut facts = SnapshotFacts {
        generation: snapshot.generation,
        age,
        unverified_seeds: serves_unverified_seeds(snapshot),
        ..SnapshotFacts::default()
    };
    for i in 0..snapshot.zone.name_count() {
        let name = snapshot.zone.name_text(i);
        let served = snapshot.set(i).len();
        let (live, failing) = match snapshot.basis(i) {
            Basis::FailOpen => (0, served),
            Basis::Seeds | Basis::Listed => (served, 0),
        };
        facts.live_nodes.push((name.clone(), live));
        facts.fail_open_nodes.push((name, failing));
    }
    facts
}

/// The `/readyz` answer: see the module documentation for when it fails.
/// `refresh_problem` is why the latest `/localnodes` round failed, if it did.
pub fn readyz(snapshot: &Snapshot, workers_up: bool, refresh_problem: Option<&str>) -> Readyz {
    let mut blocking = Vec::new();
    if !workers_up {
        blocking.push("not every UDP worker is running; see the log".to_string());
    }
    if snapshot.node_count() == 0 {
        blocking.push(format!("no node to answer {} with", snapshot.zone.apex()));
    }
    if serves_unverified_seeds(snapshot) {
        let seeds: Vec<String> = snapshot.nodes().map(|ip| ip.to_string()).collect();
        let mut line = format!(
            "serving the seeds ({}), which no /localnodes answer has confirmed",
            seeds.join(", ")
        );
        if let Some(problem) = refresh_problem {
            let _ = write!(line, "; the latest poll failed: {problem}");
        }
        blocking.push(line);
    }
    let degraded: Vec<String> = (0..snapshot.zone.name_count())
        .filter(|&i| snapshot.basis(i) == Basis::FailOpen)
        .map(|i| {
            format!(
                "{}: serving {} nodes that fail their health checks (fail open)",
                snapshot.zone.name_text(i).trim_end_matches('.'),
                snapshot.set(i).len()
            )
        })
        .collect();
    let (ready, head) = match (blocking.is_empty(), degraded.is_empty()) {
        (false, _) => (false, "not ready"),
        (true, false) => (true, "ready, degraded"),
        (true, true) => (true, "ready"),
    };
    let mut text = head.to_string();
    for reason in blocking.iter().chain(&degraded) {
        let _ = write!(text, "\n- {reason}");
    }
    text.push('\n');
    Readyz { ready, text }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::dns::{Zone, ZoneSettings};
    use crate::nodes::NodeSource;

    fn zone() -> Arc<Zone> {
        let zone = Zone::new(&ZoneSettings::new("alt.example")).unwrap();
        Arc::new(zone.with_names(&["dc2.alt.example".to_string()]).unwrap())
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn reminders_come_at_most_every_thirty_seconds_and_restart_when_cleared() {
        let start = Instant::now();
        let mut r = Reminder::default();
        assert!(r.due(start));
        assert!(!r.due(start + Duration::from_secs(1)));
        assert!(!r.due(start + Duration::from_secs(29)));
        assert!(r.due(start + REMIND_EVERY));
        assert!(!r.due(start + REMIND_EVERY + Duration::from_secs(10)));
        r.clear();
        assert!(r.due(start + REMIND_EVERY + Duration::from_secs(11)));
    }

    #[test]
    fn unverified_seeds_are_not_ready_and_say_why() {
        let seeds = Snapshot::new(1, zone(), NodeSource::Seeds, &ips(&["10.0.0.1"]));
        let report = readyz(&seeds, true, Some("10.0.0.1:8043: TLS; check --ca-file"));
        assert!(!report.ready);
        assert!(
            report
                .text
                .starts_with("not ready\n- serving the seeds (10.0.0.1)"),
            "{}",
            report.text
        );
        assert!(report.text.contains("check --ca-file"), "{}", report.text);
        let f = facts(&seeds, None);
        assert!(f.unverified_seeds);
        assert_eq!(f.live_nodes[0], ("alt.example.".to_string(), 1));

        let listed = Snapshot::new(2, zone(), NodeSource::Cluster, &ips(&["10.0.0.1"]));
        let report = readyz(&listed, true, None);
        assert_eq!((report.ready, report.text.as_str()), (true, "ready\n"));
        assert!(!facts(&listed, None).unverified_seeds);
    }

    #[test]
    fn fail_open_stays_ready_and_moves_the_count() {
        let sets = [ips(&["10.0.0.1", "10.0.0.2"]), ips(&["10.0.2.1"])];
        let snapshot = Snapshot::with_sets(3, zone(), NodeSource::Cluster, &sets)
            .with_bases(&[Basis::FailOpen, Basis::Listed]);
        let report = readyz(&snapshot, true, None);
        assert!(report.ready);
        assert_eq!(
            report.text,
            "ready, degraded\n- alt.example: serving 2 nodes that fail their health checks \
             (fail open)\n"
        );
        assert_eq!(fail_open_names(&snapshot), ["alt.example"]);
        let f = facts(&snapshot, None);
        assert_eq!(
            f.live_nodes,
            [("alt.example.".into(), 0), ("dc2.alt.example.".into(), 1)]
        );
        assert_eq!(
            f.fail_open_nodes,
            [("alt.example.".into(), 2), ("dc2.alt.example.".into(), 0)]
        );
    }

    #[test]
    fn no_node_or_a_stopped_worker_is_not_ready() {
        let empty = Snapshot::new(1, zone(), NodeSource::Cluster, &[]);
        let report = readyz(&empty, false, None);
        assert!(!report.ready);
        assert!(report.text.contains("UDP worker"), "{}", report.text);
        assert!(
            report.text.contains("no node to answer alt.example"),
            "{}",
            report.text
        );
    }
}
