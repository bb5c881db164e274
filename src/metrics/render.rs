//! The Prometheus text exposition of [`Metrics`], one function per group of
//! families so that each reads on a screen; the order of the families and
//! samples is the order of the calls.

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use super::{
    control::{Histogram, BUCKETS},
    lock, ControlMetrics, DropReason, Metrics, Outcome, QueryCounts, QueryType, Rcode, ReadyFacts,
    RemovalReason, SnapshotFacts, BUILD_INFO, DROPPED_PACKETS_TOTAL, FAIL_OPEN, FAIL_OPEN_NODES,
    FORWARDED_QUERIES_TOTAL, FORWARD_OUTSTANDING, HEALTH_PROBES_TOTAL, HEALTH_PROBE_SECONDS,
    LIVE_NODES, LOCATION_FALLBACKS_TOTAL, NODE_REMOVALS_TOTAL, NODE_REMOVAL_SECONDS, QUERIES_TOTAL,
    RATE_LIMIT_SLIPS_TOTAL, READY, REFRESH_REQUESTS_TOTAL, RESPONSES_TOTAL, SNAPSHOT_AGE_SECONDS,
    SNAPSHOT_GENERATION, START_TIME_SECONDS, TCP_CONNECTIONS, TRUNCATED_RESPONSES_TOTAL,
    UNVERIFIED_SEEDS, WORKERS_UP, WORKER_QUERIES_TOTAL,
};

impl Metrics {
    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Text(String::with_capacity(8192));
        let udp_each: Vec<QueryCounts> = self.udp.iter().map(|w| w.counts()).collect();
        let mut udp = QueryCounts::default();
        for c in &udp_each {
            udp += *c;
        }
        let tcp = self.tcp.counts();

        self.render_process(&mut out);
        render_queries(&mut out, &udp_each, &udp, &tcp);
        render_per_transport(&mut out, &udp, &tcp);
        render_control(&mut out, &self.control);
        if let Some(source) = self.snapshot.get() {
            render_snapshot(&mut out, &source.facts());
        }
        if let Some(source) = self.ready.get() {
            render_ready(&mut out, source());
        }
        out.0
    }

    /// Build information and start time.
    fn render_process(&self, out: &mut Text) {
        out.family(
            BUILD_INFO,
            "gauge",
            "Version and UDP I/O backend; always 1.",
        );
        let backend = lock(&self.io_backend).clone();
        out.sample(
            BUILD_INFO,
            &[("version", self.version), ("io_backend", &backend)],
            1,
        );

        out.family(
            START_TIME_SECONDS,
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
        );
        let start = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        out.sample(START_TIME_SECONDS, &[], Seconds(start));
    }
}

/// Queries by transport, type and worker; responses by RCODE; drops by reason.
fn render_queries(out: &mut Text, udp_each: &[QueryCounts], udp: &QueryCounts, tcp: &QueryCounts) {
    let by_transport = [("udp", udp), ("tcp", tcp)];
    out.family(
        QUERIES_TOTAL,
        "counter",
        "DNS queries received, by transport and query type.",
    );
    for (transport, counts) in by_transport {
        for &q in QueryType::ALL {
            out.sample(
                QUERIES_TOTAL,
                &[("transport", transport), ("qtype", q.label())],
                counts.query(q),
            );
        }
    }

    out.family(
        WORKER_QUERIES_TOTAL,
        "counter",
        "DNS queries received over UDP, by worker thread.",
    );
    for (i, counts) in udp_each.iter().enumerate() {
        out.sample(
            WORKER_QUERIES_TOTAL,
            &[("worker", &i.to_string())],
            counts.total_queries(),
        );
    }

    out.family(
        RESPONSES_TOTAL,
        "counter",
        "DNS responses sent, by transport and RCODE.",
    );
    for (transport, counts) in by_transport {
        for &r in Rcode::ALL {
            out.sample(
                RESPONSES_TOTAL,
                &[("transport", transport), ("rcode", r.label())],
                counts.response(r),
            );
        }
    }

    out.family(
        DROPPED_PACKETS_TOTAL,
        "counter",
        "Packets dropped without a response, by reason.",
    );
    for &d in DropReason::ALL {
        out.sample(
            DROPPED_PACKETS_TOTAL,
            &[("reason", d.label())],
            udp.dropped(d).wrapping_add(tcp.dropped(d)),
        );
    }
}

/// The counters with only a transport label.
fn render_per_transport(out: &mut Text, udp: &QueryCounts, tcp: &QueryCounts) {
    let per_transport = [
        (
            TRUNCATED_RESPONSES_TOTAL,
            "Responses sent truncated (TC=1) because they did not fit, by transport.",
            udp.truncated,
            tcp.truncated,
        ),
        (
            FORWARDED_QUERIES_TOTAL,
            "Queries for names outside the zone handed to the forwarder, by transport.",
            udp.forwarded,
            tcp.forwarded,
        ),
        (
            RATE_LIMIT_SLIPS_TOTAL,
            "Responses over the rate limit sent truncated (slipped), by transport.",
            udp.slipped,
            tcp.slipped,
        ),
    ];
    for (name, help, udp_value, tcp_value) in per_transport {
        out.family(name, "counter", help);
        out.sample(name, &[("transport", "udp")], udp_value);
        out.sample(name, &[("transport", "tcp")], tcp_value);
    }
}

/// Refreshes and probes per node, and the control plane's gauges.
fn render_control(out: &mut Text, control: &ControlMetrics) {
    let per_node = [
        (
            REFRESH_REQUESTS_TOTAL,
            "Requests of GET /localnodes, by node and result.",
            &control.refresh,
        ),
        (
            HEALTH_PROBES_TOTAL,
            "Health probes of Alternator nodes, by node and result.",
            &control.probes,
        ),
    ];
    for (name, help, map) in per_node {
        out.family(name, "counter", help);
        for (node, counts) in lock(map).iter() {
            for &o in Outcome::ALL {
                out.sample(
                    name,
                    &[("node", node), ("result", o.label())],
                    counts[o as usize],
                );
            }
        }
    }

    out.family(
        HEALTH_PROBE_SECONDS,
        "histogram",
        "Seconds each health probe took, by result.",
    );
    let times = *lock(&control.probe_times);
    for &o in Outcome::ALL {
        out.histogram(
            HEALTH_PROBE_SECONDS,
            ("result", o.label()),
            &times[o as usize],
        );
    }

    render_removals(out, control);
    out.family(
        LOCATION_FALLBACKS_TOTAL,
        "counter",
        "Times a location's clients were answered from elsewhere (--affinity): from its \
         datacenter (to=dc) or from their name's usual nodes (to=name).",
    );
    for ((dc, rack, to), n) in lock(&control.location_fallbacks).iter() {
        let labels = [("dc", dc.as_str()), ("rack", rack.as_str()), ("to", *to)];
        out.sample(LOCATION_FALLBACKS_TOTAL, &labels, *n);
    }
    out.family(TCP_CONNECTIONS, "gauge", "TCP connections open.");
    out.sample(
        TCP_CONNECTIONS,
        &[],
        control.tcp_connections.load(Ordering::Relaxed),
    );
    out.family(
        FORWARD_OUTSTANDING,
        "gauge",
        "Forwarded queries awaiting an upstream answer.",
    );
    out.sample(
        FORWARD_OUTSTANDING,
        &[],
        control.forward_outstanding.load(Ordering::Relaxed),
    );
}

/// Nodes taken out by reason, and the time each removal took.
fn render_removals(out: &mut Text, control: &ControlMetrics) {
    let removals = *lock(&control.removals);
    out.family(
        NODE_REMOVALS_TOTAL,
        "counter",
        "Nodes taken out of the answers, by reason.",
    );
    for &r in RemovalReason::ALL {
        out.sample(
            NODE_REMOVALS_TOTAL,
            &[("reason", r.label())],
            removals[r as usize].count,
        );
    }
    out.family(
        NODE_REMOVAL_SECONDS,
        "histogram",
        "Seconds from a removed node's first failing probe to the answers without it, by reason.",
    );
    for &r in RemovalReason::ALL {
        if r == RemovalReason::Unlisted {
            continue;
        }
        out.histogram(
            NODE_REMOVAL_SECONDS,
            ("reason", r.label()),
            &removals[r as usize].took,
        );
    }
}

/// Facts about the current snapshot, when the server gave a source of them.
fn render_snapshot(out: &mut Text, facts: &SnapshotFacts) {
    out.family(
        LIVE_NODES,
        "gauge",
        "Nodes served that pass their health checks, by served name.",
    );
    for (name, n) in &facts.live_nodes {
        out.sample(LIVE_NODES, &[("name", name)], *n);
    }
    out.family(
        FAIL_OPEN_NODES,
        "gauge",
        "Nodes served although they fail their health checks (fail open), by served name.",
    );
    for (name, n) in &facts.fail_open_nodes {
        out.sample(FAIL_OPEN_NODES, &[("name", name)], *n);
    }
    out.family(
        FAIL_OPEN,
        "gauge",
        "1 while the name serves nodes that fail their health checks (fail open).",
    );
    for (name, n) in &facts.fail_open_nodes {
        out.sample(FAIL_OPEN, &[("name", name)], u8::from(*n > 0));
    }
    out.family(
        UNVERIFIED_SEEDS,
        "gauge",
        "1 while seeds are served that no /localnodes answer has confirmed.",
    );
    out.sample(UNVERIFIED_SEEDS, &[], u8::from(facts.unverified_seeds));
    out.family(
        SNAPSHOT_GENERATION,
        "gauge",
        "Generation of the current node snapshot.",
    );
    out.sample(SNAPSHOT_GENERATION, &[], facts.generation);
    if let Some(age) = facts.age {
        out.family(
            SNAPSHOT_AGE_SECONDS,
            "gauge",
            "Seconds since the current node snapshot was published.",
        );
        out.sample(SNAPSHOT_AGE_SECONDS, &[], Seconds(age));
    }
}

/// Readiness, when the server gave a source of it.
fn render_ready(out: &mut Text, facts: ReadyFacts) {
    out.family(
        WORKERS_UP,
        "gauge",
        "1 while every UDP worker runs its loop and none has failed.",
    );
    out.sample(WORKERS_UP, &[], u8::from(facts.workers_up));
    out.family(READY, "gauge", "1 while /readyz answers 200.");
    out.sample(READY, &[], u8::from(facts.ready));
}

/// A duration written as seconds with millisecond precision.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0.as_secs(), self.0.subsec_millis())
    }
}

/// The exposition text being built.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only backslash and newline; ours have neither.
        debug_assert!(!help.contains(['\\', '\n']));
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(key);
                self.0.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// The samples of one histogram of family `name` with one label:
    /// `_bucket` (cumulative, `+Inf` last), `_sum` and `_count`.
    fn histogram(&mut self, name: &str, label: (&str, &str), h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut below = 0;
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            below += n;
            self.sample(&bucket, &[label, ("le", &le.to_string())], below);
        }
        self.sample(&bucket, &[label, ("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[label], h.sum);
        self.sample(&format!("{name}_count"), &[label], h.count);
    }
}
