//! The probe schedule on tokio's paused clock: how soon a node that stops
//! answering is reported failing, whatever the phase of its prober.

use std::net::Ipv4Addr;

use super::*;

/// A node that answers at once until `fault_at`, then hangs: every check
/// from then on takes the whole timeout and fails.
struct HangsAt {
    fault_at: Instant,
}

impl Check for HangsAt {
    async fn check(&mut self, timeout: Duration) -> ProbeResult {
        if Instant::now() < self.fault_at {
            return ProbeResult::Passed;
        }
        tokio::time::sleep(timeout).await;
        ProbeResult::Failed {
            kind: FailureKind::Timeout,
            detail: "no answer within the timeout".into(),
            hint: "check the node",
        }
    }

    async fn closed(&self) {
        // A hanging node keeps its connections open.
        std::future::pending().await
    }
}

/// A node whose process dies at `fault_at`: the kernel closes the kept
/// connection then, and refuses new ones.
struct DiesAt {
    fault_at: Instant,
}

impl Check for DiesAt {
    async fn check(&mut self, _timeout: Duration) -> ProbeResult {
        if Instant::now() < self.fault_at {
            return ProbeResult::Passed;
        }
        ProbeResult::Failed {
            kind: FailureKind::Refused,
            detail: "tcp connect error: Connection refused".into(),
            hint: "check the node",
        }
    }

    async fn closed(&self) {
        if Instant::now() < self.fault_at {
            tokio::time::sleep_until(self.fault_at).await;
        } else {
            std::future::pending().await
        }
    }
}

/// A prober of one node running `check` with the default health settings,
/// its reports, and the sender whose drop retires it.
struct Started {
    task: JoinHandle<()>,
    reports: mpsc::Receiver<Report>,
    retire: oneshot::Sender<()>,
    /// Where the prober records its probe times.
    metrics: Arc<Metrics>,
}

fn start(check: impl Check, first: Duration, seed: u64) -> Started {
    let node = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let (tx, reports) = mpsc::channel(16);
    let (retire, retired) = oneshot::channel();
    let metrics = Arc::new(Metrics::new(1));
    let link = ProberLink {
        id: 1,
        tx,
        retired,
        metrics: Arc::clone(&metrics),
    };
    let health = HealthSettings::default();
    let task = tokio::spawn(probe_node(node, check, health, first, seed, link));
    Started {
        task,
        reports,
        retire,
        metrics,
    }
}

/// How long after `fault_at` the prober reports the `failures`-th failure
/// in a row.
async fn time_to_down(fault_at: Instant, first: Duration, seed: u64) -> Duration {
    let failures = HealthSettings::default().failures;
    let Started {
        task: prober,
        reports: mut rx,
        retire: _retire,
        ..
    } = start(HangsAt { fault_at }, first, seed);
    let mut failed = 0;
    let took = loop {
        let Some(Report::Probe(_, Event::Probe { result, .. })) = rx.recv().await else {
            panic!("the prober stopped reporting");
        };
        if result == ProbeResult::Passed {
            failed = 0;
            continue;
        }
        failed += 1;
        if failed == failures {
            break Instant::now() - fault_at;
        }
    };
    prober.abort();
    took
}

#[tokio::test(start_paused = true)]
async fn a_node_that_hangs_is_reported_down_within_1150_ms_at_any_phase() {
    // The defaults: a probe every 500 ms (+-10%), 300 ms timeout, two
    // failures in a row. The worst case is a fault just after a passing
    // probe: the next starts at most 550 ms later and fails 300 ms after;
    // the second opinion starts at once and fails 300 ms after that.
    let mut times = Vec::new();
    for phase in 0..60u64 {
        let fault_at = Instant::now() + Duration::from_millis(2000 + phase * 17);
        let first = Duration::from_millis(phase * 7 % 100);
        times.push(time_to_down(fault_at, first, phase).await);
    }
    let worst = times.iter().max().unwrap();
    let best = times.iter().min().unwrap();
    assert!(*worst <= Duration::from_millis(1150), "{times:?}");
    // The phases tried reach both ends of the range.
    assert!(*worst > Duration::from_millis(1000), "{times:?}");
    assert!(*best < Duration::from_millis(700), "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn probes_of_a_healthy_node_keep_their_interval() {
    let never = Instant::now() + Duration::from_secs(3600);
    let begun = Instant::now();
    let Started {
        task: prober,
        reports: mut rx,
        retire: _retire,
        ..
    } = start(HangsAt { fault_at: never }, Duration::ZERO, 1);
    let mut at = Vec::new();
    while at.len() < 20 {
        assert!(matches!(
            rx.recv().await,
            Some(Report::Probe(_, Event::Probe { .. }))
        ));
        at.push(Instant::now() - begun);
    }
    prober.abort();
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (Duration::from_millis(450)..Duration::from_millis(550)).contains(&gap),
            "{at:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_retired_prober_reports_the_probe_under_way_then_stops() {
    // Hangs from the start: the first probe runs the whole 300 ms timeout.
    let fault_at = Instant::now();
    let Started {
        task: prober,
        reports: mut rx,
        retire,
        ..
    } = start(HangsAt { fault_at }, Duration::ZERO, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(retire);
    let Some(Report::Probe(_, Event::Probe { result, .. })) = rx.recv().await else {
        panic!("the probe under way was not reported");
    };
    assert!(matches!(result, ProbeResult::Failed { .. }));
    assert_eq!(Instant::now() - fault_at, HealthSettings::default().timeout);
    assert!(rx.recv().await.is_none(), "a retired prober probes no more");
    prober.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_prober_retired_between_probes_stops_at_once() {
    let never = Instant::now() + Duration::from_secs(3600);
    let Started {
        task: prober,
        reports: mut rx,
        retire,
        ..
    } = start(HangsAt { fault_at: never }, Duration::ZERO, 1);
    assert!(rx.recv().await.is_some());
    let retired_at = Instant::now();
    drop(retire);
    assert!(rx.recv().await.is_none());
    prober.await.unwrap();
    assert_eq!(Instant::now(), retired_at);
}

#[tokio::test]
async fn a_replaced_probers_result_counts_only_until_its_replacement_reports() {
    let (retire, _) = oneshot::channel();
    let mut current = Prober {
        id: 2,
        reported: false,
        task: tokio::spawn(async {}),
        _retire: retire,
    };
    // The replaced prober's probe under way: the newest word so far.
    assert!(latest_word(Some(&mut current), 1));
    assert!(latest_word(Some(&mut current), 2));
    // Once the replacement has reported, the old one's late result is stale.
    assert!(!latest_word(Some(&mut current), 1));
    assert!(latest_word(Some(&mut current), 2));
    // A node no longer probed takes no result.
    assert!(!latest_word(None, 2));
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_process_dies_is_reported_refused_at_once_at_any_phase() {
    for phase in 0..40u64 {
        let fault_at = Instant::now() + Duration::from_millis(2000 + phase * 13);
        let first = Duration::from_millis(phase * 7 % 100);
        let Started {
            task: prober,
            reports: mut rx,
            retire: _retire,
            ..
        } = start(DiesAt { fault_at }, first, phase);
        loop {
            let Some(Report::Probe(_, Event::Probe { result, .. })) = rx.recv().await else {
                panic!("the prober stopped reporting");
            };
            if let ProbeResult::Failed { kind, .. } = result {
                assert_eq!(kind, FailureKind::Refused);
                assert_eq!(Instant::now(), fault_at, "phase {phase}");
                break;
            }
        }
        prober.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn each_probe_time_is_recorded_by_outcome() {
    // Answers at once for a second, then hangs: each failing probe takes
    // the whole 300 ms timeout.
    let fault_at = Instant::now() + Duration::from_secs(1);
    let Started {
        task: prober,
        reports: mut rx,
        retire: _retire,
        metrics,
    } = start(HangsAt { fault_at }, Duration::ZERO, 1);
    let (mut passed, mut failed) = (0, 0);
    while failed < 2 {
        let Some(Report::Probe(_, Event::Probe { result, .. })) = rx.recv().await else {
            panic!("the prober stopped reporting");
        };
        match result {
            ProbeResult::Passed => passed += 1,
            ProbeResult::Failed { .. } => failed += 1,
        }
    }
    prober.abort();
    let control = metrics.control();
    assert!(passed > 0);
    assert_eq!(control.health_probes_timed(Outcome::Ok), passed);
    assert_eq!(control.health_probes_timed(Outcome::Error), 2);
    let text = metrics.render();
    for line in [
        format!(
            "alternator_dns_health_probe_seconds_bucket{{result=\"ok\",le=\"0.001\"}} {passed}"
        ),
        "alternator_dns_health_probe_seconds_bucket{result=\"error\",le=\"0.25\"} 0".into(),
        "alternator_dns_health_probe_seconds_bucket{result=\"error\",le=\"0.5\"} 2".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[test]
fn probe_starts_share_one_grid_inside_their_window() {
    let interval = HealthSettings::default().interval.as_micros() as u64;
    let step = Duration::from_micros(interval / 250);
    let window = Duration::from_micros(interval / 5);
    let base = Instant::now();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    let starts: Vec<Instant> = (0..1000)
        .map(|_| {
            let earliest = base + Duration::from_micros(rng.next_u64() % 5_000_000);
            let at = earliest + Duration::from_micros(rng.next_u64() % window.as_micros() as u64);
            let start = on_grid(at, earliest, interval);
            // Never before the window, never later than `at` unless that
            // takes it into the window.
            assert!(start >= earliest && start < earliest + window);
            assert!(start <= at || start < earliest + step);
            start
        })
        .collect();
    for start in &starts {
        let apart = start.duration_since(starts[0]).as_micros()
            + starts[0].duration_since(*start).as_micros();
        assert_eq!(apart % step.as_micros(), 0, "off the grid");
    }
}
