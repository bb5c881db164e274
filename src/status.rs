//! `alternator-dns status`: what a running server hands out, and why, from
//! its `/nodes` endpoint (see [`crate::nodes::view`]): a table of the nodes
//! and of the names, or the JSON as the server wrote it.
//!
//! HTTP through hyper's client connection, on a runtime of its own: the
//! command runs once and exits.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;

use crate::nodes::view::{NodeView, NodesView};

/// How long the whole exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why no view came back.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error(
        "cannot reach the server's metrics endpoint at {addr}: {reason}; is the server running, \
         with --metrics-listen {addr}? (give the right one with --metrics ADDR:PORT or --config FILE)"
    )]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("http://{addr}/nodes answered HTTP {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
    #[error(
        "http://{addr}/nodes did not answer with the node view ({reason}); is that address \
         an alternator-dns metrics endpoint of this version?"
    )]
    NotAView { addr: SocketAddr, reason: String },
}

/// The address to ask: an unspecified listen address (0.0.0.0, ::) is
/// reached through loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Asks the server at `addr` for `/nodes`; the body as it came, and the view
/// read from it.
pub fn fetch(addr: SocketAddr) -> Result<(String, NodesView), StatusError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unreachable(addr, &e))?;
    let (status, body) = runtime
        .block_on(async {
            tokio::time::timeout(TIMEOUT, get_nodes(addr))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
        })
        .map_err(|reason| StatusError::Unreachable { addr, reason })?;
    if status != StatusCode::OK {
        return Err(StatusError::Status { addr, status, body });
    }
    let view = serde_json::from_str(&body).map_err(|e| StatusError::NotAView {
        addr,
        reason: e.to_string(),
    })?;
    Ok((body, view))
}

fn unreachable(addr: SocketAddr, e: &dyn std::fmt::Display) -> StatusError {
    StatusError::Unreachable {
        addr,
        reason: e.to_string(),
    }
}

async fn get_nodes(addr: SocketAddr) -> Result<(StatusCode, String), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get("/nodes")
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The view as tables: the nodes, the names, and the locations (with
/// `--affinity`).
pub fn table(view: &NodesView) -> String {
    let mut rows = vec![[
        "ADDRESS",
        "LISTED",
        "HEALTH",
        "SERVED",
        "LAST PROBE",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(view.nodes.iter().map(node_row));
    let mut out = format!("generation {}\n\n", view.generation);
    out.push_str(&columns(&rows));
    let mut names = vec![["NAME", "LOCATION", "SERVES"].map(String::from).to_vec()];
    for name in &view.names {
        let location = match (&name.dc, &name.rack) {
            (None, None) => "local datacenter".to_string(),
            (Some(dc), None) => format!("dc={dc}"),
            (None, Some(rack)) => format!("rack={rack}"),
            (Some(dc), Some(rack)) => format!("dc={dc} rack={rack}"),
        };
        let mut serves = match name.served.is_empty() {
            true => "nothing".to_string(),
            false => name.served.join(","),
        };
        if let Some(fallback) = &name.fallback {
            let _ = write!(serves, " (fallback: {fallback})");
        }
        if name.fail_open {
            serves.push_str(" (FAIL OPEN: every node fails its probes)");
        }
        names.push(vec![name.name.clone(), location, serves]);
    }
    out.push('\n');
    out.push_str(&columns(&names));
    if !view.locations.is_empty() {
        out.push('\n');
        out.push_str(&columns(&location_rows(view)));
    }
    out
}

/// The locations' table: where each one's clients are answered from.
fn location_rows(view: &NodesView) -> Vec<Vec<String>> {
    let mut rows = vec![["CLIENT LOCATION", "ANSWERED WITH"]
        .map(String::from)
        .to_vec()];
    for location in &view.locations {
        let place = match &location.rack {
            Some(rack) => format!("{}/{rack}", location.dc),
            None => location.dc.clone(),
        };
        let answered = match location.from.as_str() {
            "rack" => format!("its rack: {}", location.served.join(",")),
            "dc" if location.rack.is_none() => {
                format!("its datacenter: {}", location.served.join(","))
            }
            "dc" => format!(
                "its datacenter (rack below --affinity-min-nodes): {}",
                location.served.join(",")
            ),
            "name" => {
                "the name's usual nodes (too few live nodes in its rack and datacenter)".into()
            }
            _ => "the name's usual nodes until its lists are polled".into(),
        };
        rows.push(vec![place, answered]);
    }
    rows
}

fn node_row(node: &NodeView) -> Vec<String> {
    let health = match node.healthy {
        Some(true) => "healthy",
        Some(false) => "FAILING",
        None => "-",
    };
    let health = format!("{health} {}s", node.since.round());
    let served = match (node.served, node.excluded) {
        (_, true) => "EXCLUDED",
        (true, false) => "yes",
        (false, false) => "no",
    };
    let probe = match &node.last_probe {
        None => "-".to_string(),
        Some(p) => match &p.error {
            None => format!("ok {:.1}ms, {:.1}s ago", p.ms, p.age_s),
            Some(e) => format!("{e} ({:.1}s ago)", p.age_s),
        },
    };
    vec![
        node.address.clone(),
        if node.listed { "yes" } else { "no" }.to_string(),
        health,
        served.to_string(),
        probe,
        node.names.join(","),
    ]
}

/// Rows as left-aligned columns, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::view::{LastProbe, LocationView, NameView};

    fn view() -> NodesView {
        NodesView {
            generation: 12,
            nodes: vec![
                NodeView {
                    address: "10.0.0.1".into(),
                    listed: true,
                    healthy: Some(true),
                    served: true,
                    excluded: false,
                    names: vec!["alternator.example.com".into()],
                    last_probe: Some(LastProbe {
                        ok: true,
                        ms: 0.84,
                        error: None,
                        age_s: 0.2,
                    }),
                    since: 61.4,
                },
                NodeView {
                    address: "10.0.0.2".into(),
                    listed: true,
                    healthy: Some(false),
                    served: false,
                    excluded: true,
                    names: vec![],
                    last_probe: Some(LastProbe {
                        ok: false,
                        ms: 0.1,
                        error: Some("cannot connect: connection refused".into()),
                        age_s: 0.4,
                    }),
                    since: 3.0,
                },
            ],
            names: vec![NameView {
                name: "alternator.example.com".into(),
                dc: None,
                rack: None,
                served: vec!["10.0.0.1".into()],
                fallback: None,
                fail_open: false,
            }],
            locations: vec![],
        }
    }

    #[test]
    fn the_table_shows_each_node_and_name() {
        let text = table(&view());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "generation 12");
        assert!(lines[2].starts_with("ADDRESS   LISTED  HEALTH"), "{text}");
        assert!(
            lines[3].contains("10.0.0.1")
                && lines[3].contains("healthy 61s")
                && lines[3].contains("ok 0.8ms, 0.2s ago")
                && lines[3].ends_with("alternator.example.com"),
            "{text}"
        );
        assert!(
            lines[4].contains("FAILING 3s")
                && lines[4].contains("EXCLUDED")
                && lines[4].contains("connection refused (0.4s ago)"),
            "{text}"
        );
        assert!(
            text.contains("alternator.example.com  local datacenter  10.0.0.1"),
            "{text}"
        );
    }

    #[test]
    fn locations_are_shown_with_where_their_clients_are_answered_from() {
        let location = |dc: &str, rack: Option<&str>, served: &[&str], from: &str| LocationView {
            dc: dc.into(),
            rack: rack.map(String::from),
            served: served.iter().map(|s| s.to_string()).collect(),
            from: from.into(),
        };
        let mut view = view();
        assert!(
            !table(&view).contains("CLIENT LOCATION"),
            "no table without locations"
        );
        view.locations = vec![
            location("dc1", Some("rack1"), &["10.0.0.1"], "rack"),
            location("dc1", Some("rack2"), &["10.0.0.1"], "dc"),
            location("dc2", None, &[], "name"),
        ];
        let text = table(&view);
        assert!(
            text.contains("dc1/rack1        its rack: 10.0.0.1"),
            "{text}"
        );
        assert!(
            text.contains("dc1/rack2        its datacenter (rack below"),
            "{text}"
        );
        assert!(
            text.contains("dc2              the name's usual nodes"),
            "{text}"
        );
        // An older server's JSON, without locations, still reads.
        let json = serde_json::to_string(&self::view()).unwrap();
        assert!(!json.contains("locations"));
        let back: NodesView = serde_json::from_str(&json).unwrap();
        assert!(back.locations.is_empty());
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9153".parse().unwrap();
        assert_eq!(target(any), "127.0.0.1:9153".parse().unwrap());
        let any6: SocketAddr = "[::]:9153".parse().unwrap();
        assert_eq!(target(any6), "[::1]:9153".parse().unwrap());
        let one: SocketAddr = "10.1.2.3:9153".parse().unwrap();
        assert_eq!(target(one), one);
    }

    #[test]
    fn nothing_listening_is_reported_with_the_address_and_what_to_check() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = fetch(addr).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StatusError::Unreachable { .. }), "{text}");
        assert!(
            text.contains(&addr.to_string()) && text.contains("--metrics"),
            "{text}"
        );
    }
}
