//! The tracker's log lines, one function per kind of change, so the rules in
//! the tracker read without the wording of what they report. Each line names
//! what changed, why, and what to check.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tracing::{error, info, warn};

use super::ProbeResult;
use crate::nodes::health::Damping;
use crate::nodes::membership::{Choice, Selector};
use crate::nodes::refresher::PollError;
use crate::nodes::snapshot::{Basis, NodeSource, Snapshot};

/// A probe result that changed whether `node` is served; `served` says
/// whether it is served now, `failing_for` how long since its first failing
/// probe.
pub(super) fn probe_changed(
    node: IpAddr,
    result: &ProbeResult,
    served: bool,
    failing_for: Option<Duration>,
) {
    let ms = failing_for.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    match (result, served) {
        (ProbeResult::Passed, _) => info!(%node, "node passes its health check; serving it"),
        (ProbeResult::Failed { detail, hint, .. }, false) => warn!(
            %node,
            reason = %detail,
            check = hint,
            failing_ms = format_args!("{ms:.1}"),
            "node fails its health check; no longer serving it"
        ),
        (ProbeResult::Failed { detail, hint, .. }, true) => warn!(
            %node,
            reason = %detail,
            check = hint,
            "node fails its health check; still served, as no node passes (fail open)"
        ),
    }
}

/// A flapping node passed again: served only after more passes.
pub(super) fn damped(node: IpAddr, damping: &Damping) {
    warn!(
        %node,
        removals = damping.limit,
        window_s = damping.window.as_secs_f64(),
        passes_needed = damping.passes,
        "node passes again but flaps (taken out this often within the window); \
         serving it after enough passes in a row"
    );
}

/// The first node to pass after every node failed: the others' next probes
/// are awaited before the answers narrow from fail open.
pub(super) fn narrowing_held(node: IpAddr, waiting: usize, interval: Duration) {
    info!(
        %node,
        waiting,
        at_most_ms = interval.as_millis() as u64,
        "a node passes again after every node failed; still serving every listed node until \
         the others' next probes report"
    );
}

pub(super) fn reachable_again(failed_rounds: u32) {
    info!(failed_rounds, "/localnodes reachable again");
}

pub(super) fn serving_unverified_seeds(
    selector: &Selector,
    failure: &PollError,
    failed_rounds: u32,
) {
    error!(
        %selector,
        error = %failure,
        check = failure.error.hint(),
        failed_rounds,
        "no node answered /localnodes: serving the seeds, which no /localnodes answer has confirmed"
    );
}

pub(super) fn keeping_stale_lists(selector: &Selector, failure: &PollError, failed_rounds: u32) {
    let check = failure.error.hint();
    if failed_rounds == 1 {
        warn!(%selector, error = %failure, check, "no node answered /localnodes; keeping the last good list");
    } else {
        warn!(
            %selector,
            error = %failure,
            check,
            failed_rounds,
            "/localnodes still failing; keeping the last good lists"
        );
    }
}

pub(super) fn still_fail_open(names: &[String], cause: &str, hint: &str) {
    error!(
        names = %names.join(","),
        cause = %cause,
        check = hint,
        "still serving nodes that fail their health check (fail open)"
    );
}

pub(super) fn fail_open(name: &str, serving: &Selector, nodes: &[String], cause: &str, hint: &str) {
    error!(
        %name,
        %serving,
        nodes = %nodes.join(","),
        cause = %cause,
        check = hint,
        "every listed node fails its health check; serving them anyway (fail open)"
    );
}

/// A name's list is now chosen another way (fail open has its own line).
/// `again`: the name had a choice before; `apex`: the first name, which
/// keeps its list rather than go empty.
pub(super) fn choice(name: &str, own: &Selector, choice: &Choice, again: bool, apex: bool) {
    match choice {
        Choice::Healthy(s) if s != own => {
            warn!(%name, wanted = %own, serving = %s, "no healthy node for this name; falling back")
        }
        Choice::Healthy(_) if again => {
            info!(%name, serving = %own, "serving this name's own nodes again")
        }
        Choice::Empty if !apex => {
            warn!(%name, wanted = %own, "no node listed for this name; answering with no address")
        }
        _ => {}
    }
}

/// What a new snapshot changes, once per change; `from` is the node whose
/// list caused it (None: a health check).
pub(super) fn changes(old: &Snapshot, new: &Snapshot, from: Option<SocketAddr>) {
    let from = from.map_or_else(|| "health check".into(), |from| from.to_string());
    if old.source == NodeSource::Seeds && new.source == NodeSource::Cluster {
        let all: Vec<String> = new.set_nodes(0).map(|ip| ip.to_string()).collect();
        info!(%from, nodes = %all.join(","), generation = new.generation, "first /localnodes answer; serving the cluster's live nodes");
    }
    for i in 0..new.zone.name_count() {
        let before: BTreeSet<IpAddr> = old.set_nodes(i).collect();
        let after: BTreeSet<IpAddr> = new.set_nodes(i).collect();
        // Nodes served in fail open are not "added": the fail-open line
        // names them as failing.
        if before == after || new.basis(i) == Basis::FailOpen {
            continue;
        }
        let added: Vec<String> = after.difference(&before).map(ToString::to_string).collect();
        let removed: Vec<String> = before.difference(&after).map(ToString::to_string).collect();
        info!(
            name = %new.zone.name_text(i),
            %from,
            nodes = after.len(),
            added = %added.join(","),
            removed = %removed.join(","),
            generation = new.generation,
            "membership changed"
        );
    }
}
