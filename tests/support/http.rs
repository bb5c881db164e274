//! The metrics endpoint from the tests: plain HTTP/1.1 requests, and the
//! Prometheus text they return, read as samples.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{wait_until, Responder};

/// `GET path` over HTTP/1.1 with `Connection: close`; the body of a 200
/// answer, within 5 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_status(addr, path).and_then(|(status, body)| (status == 200).then_some(body))
}

/// The sum of the samples of metric `name` in Prometheus text `text` whose
/// labels include every `key="value"` of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

impl Responder {
    /// The current Prometheus text of its metrics endpoint.
    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics_addr()?, "/metrics")
    }
}

/// `GET path` over HTTP/1.1: the status code and the body, within 5 s.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

impl Responder {
    /// `/readyz`: its status code and body.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http_status(self.metrics_addr()?, "/readyz")
    }

    /// The value of metric `name` with `labels` (summed), None without a
    /// scrape.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        Some(metric_sum(&self.metrics()?, name, labels))
    }

    /// Waits until metric `name` with `labels` reads `value`.
    pub fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timeout: Duration,
    ) -> bool {
        wait_until(timeout, || self.metric(name, labels) == Some(value))
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics`.
pub fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, body) =
        http_status(addr, "/metrics").unwrap_or_else(|| panic!("GET /metrics from {addr}"));
    assert_eq!(status, 200, "GET /metrics: {body}");
    let parsed = samples(&body);
    (body, parsed)
}

/// The value of sample `key` (name with labels, exactly as written).
pub fn sample(metrics: &BTreeMap<String, f64>, text: &str, key: &str) -> f64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in:\n{text}"))
}

/// The sum of the samples of family `name` whose labels include every one of `labels`.
pub fn sum_where(metrics: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{name}{{")) && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}
