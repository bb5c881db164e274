//! Tests of the simulated cluster, through a raw HTTP/1.1 client on loopback.
//! Every wait is bounded.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Fault, SimCluster, GARBAGE_BODY, HOST_IDS_PER_RESPONSE};

/// Bound on every wait that is expected to succeed.
const T: Duration = Duration::from_secs(5);

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn start(n: u8) -> SimCluster {
    let addrs: Vec<IpAddr> = (1..=n).map(v4).collect();
    SimCluster::start(&addrs, 0).expect("start simulated cluster")
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn content_type(&self) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then_some(value.trim())
        })
    }

    fn content_length(&self) -> Option<usize> {
        self.headers.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            if name.eq_ignore_ascii_case("content-length") {
                value.trim().parse().ok()
            } else {
                None
            }
        })
    }
}

fn parse_head(buf: &[u8]) -> Option<(usize, u16, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((end + 4, status, head))
}

fn parse(buf: &[u8]) -> io::Result<Reply> {
    let (body_start, status, headers) = parse_head(buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad HTTP response"))?;
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[body_start..]).into_owned(),
    })
}

fn connect(to: SocketAddr, read_timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&to, T)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(T))?;
    Ok(stream)
}

/// One request on a fresh connection with `Connection: close`.
fn request(to: SocketAddr, method: &str, path: &str, read_timeout: Duration) -> io::Result<Reply> {
    let mut stream = connect(to, read_timeout)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    parse(&buf)
}

fn get(to: SocketAddr, path: &str) -> Reply {
    request(to, "GET", path, T).unwrap_or_else(|e| panic!("GET {path} from {to}: {e}"))
}

/// One request on an open keep-alive connection; reads exactly one response.
fn keep_alive_get(stream: &mut TcpStream, host: SocketAddr, path: &str) -> io::Result<Reply> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    read_reply(stream)
}

/// Reads exactly one response (with a `Content-Length` body) from `stream`.
fn read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((body_start, _, _)) = parse_head(&buf) {
            let reply = parse(&buf)?;
            let len = reply.content_length().unwrap_or(0);
            if buf.len() >= body_start + len {
                return Ok(reply);
            }
        }
    }
}

fn localnodes(c: &SimCluster, node: IpAddr) -> Vec<String> {
    let reply = get(c.socket_addr(node), "/localnodes");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type(), Some("application/json"));
    serde_json::from_str(&reply.body).expect("JSON array of strings")
}

fn sorted(v: Vec<String>) -> Vec<String> {
    let mut v = v;
    v.sort();
    v
}

fn strings(addrs: &[IpAddr]) -> Vec<String> {
    sorted(addrs.iter().map(ToString::to_string).collect())
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn refused(to: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&to, T),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn localnodes_lists_every_listed_node_in_shuffled_order() {
    let c = start(3);
    let all = strings(&c.nodes());
    assert_eq!(c.nodes(), vec![v4(1), v4(2), v4(3)]);
    for node in c.nodes() {
        assert_eq!(sorted(localnodes(&c, node)), all);
    }
    let orders: BTreeSet<Vec<String>> = (0..40).map(|_| localnodes(&c, v4(1))).collect();
    assert!(orders.len() > 1, "always the same order: {orders:?}");
}

#[test]
fn port_zero_gives_every_node_the_same_port() {
    let c = start(3);
    assert_ne!(c.port(), 0);
    for node in c.nodes() {
        assert_eq!(c.socket_addr(node).port(), c.port());
        assert_eq!(get(c.socket_addr(node), "/").status, 200);
    }
}

#[test]
fn unlisted_node_disappears_from_localnodes_but_still_serves() {
    let c = start(3);
    c.set_listed(v4(2), false);
    assert_eq!(c.listed(), vec![v4(1), v4(3)]);
    for node in c.nodes() {
        assert_eq!(sorted(localnodes(&c, node)), strings(&[v4(1), v4(3)]));
    }
    assert_eq!(get(c.socket_addr(v4(2)), "/").status, 200);
    c.set_listed(v4(2), true);
    assert_eq!(sorted(localnodes(&c, v4(1))), strings(&c.nodes()));
    // Unknown nodes are ignored.
    c.set_listed(v4(99), false);
}

#[test]
fn health_check_body_and_not_found() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    let reply = get(to, "/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type(), Some("text/plain"));
    assert_eq!(reply.body, format!("healthy: {to}"));
    assert_eq!(get(to, "/nope").status, 404);
    assert_eq!(request(to, "POST", "/localnodes", T).unwrap().status, 404);
    // The default location is dc1 / rack1; other query parameters are ignored.
    let reply = get(to, "/localnodes?dc=dc1&rack=rack1&other=1");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "[\"127.0.0.1\"]");
    assert_eq!(get(to, "/localnodes?rack=r1").body, "[]");
}

#[test]
fn counters_count_requests_per_node_and_kind() {
    let c = start(2);
    let to = c.socket_addr(v4(1));
    for _ in 0..2 {
        get(to, "/localnodes");
    }
    for _ in 0..3 {
        get(to, "/");
    }
    get(to, "/other");
    assert_eq!(c.localnodes_requests(v4(1)), 2);
    assert_eq!(c.health_requests(v4(1)), 3);
    assert_eq!(c.localnodes_requests(v4(2)), 0);
    assert_eq!(c.health_requests(v4(2)), 0);
    assert_eq!(c.localnodes_requests(v4(77)), 0);
}

#[test]
fn fault_down_refuses_closes_open_connections_and_comes_back() {
    let c = start(2);
    let to = c.socket_addr(v4(1));
    let mut open = connect(to, T).unwrap();
    assert_eq!(keep_alive_get(&mut open, to, "/").unwrap().status, 200);

    c.set_fault(v4(1), Fault::Down);
    assert_eq!(c.fault(v4(1)), Some(Fault::Down));
    assert!(refused(to), "Down must refuse connections at once");
    let mut buf = [0u8; 64];
    match open.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("open connection not closed: {other:?}"),
    }
    // The other node is unaffected, and the down node stays listed.
    assert_eq!(sorted(localnodes(&c, v4(2))), strings(&[v4(1), v4(2)]));

    c.set_fault(v4(1), Fault::None);
    assert_eq!(get(to, "/").status, 200);
    // Down twice, back twice: re-binding right away keeps working.
    c.set_fault(v4(1), Fault::Down);
    c.set_fault(v4(1), Fault::Down);
    assert!(refused(to));
    c.try_set_fault(v4(1), Fault::EmptyList).unwrap();
    assert_eq!(get(to, "/localnodes").body, "[]");
}

/// Whether the node closed `stream`: the next read sees its end (or a reset).
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn close_connections_closes_kept_connections_and_serves_new_ones() {
    let c = start(2);
    let to = c.socket_addr(v4(1));
    let other = c.socket_addr(v4(2));
    let mut kept = connect(to, T).unwrap();
    assert_eq!(keep_alive_get(&mut kept, to, "/").unwrap().status, 200);
    let mut kept_other = connect(other, T).unwrap();
    assert_eq!(
        keep_alive_get(&mut kept_other, other, "/").unwrap().status,
        200
    );

    c.close_connections(v4(1)).unwrap();
    // The kept connection is closed by the node (the read is bounded by T).
    assert!(closed_by_peer(&mut kept), "kept connection not closed");
    // The node still listens: a new connection is served, and kept alive.
    let mut fresh = connect(to, T).unwrap();
    assert_eq!(keep_alive_get(&mut fresh, to, "/").unwrap().status, 200);
    assert_eq!(
        sorted(
            serde_json::from_str(&keep_alive_get(&mut fresh, to, "/localnodes").unwrap().body)
                .unwrap()
        ),
        strings(&c.nodes())
    );
    // The other node's connection is untouched, and so is the fault.
    assert_eq!(
        keep_alive_get(&mut kept_other, other, "/").unwrap().status,
        200
    );
    assert_eq!(c.fault(v4(1)), Some(Fault::None));

    // A request under way is answered before its connection is closed.
    c.set_fault(v4(1), Fault::Delay(Duration::from_millis(300)));
    let before = c.health_requests(v4(1));
    write!(fresh, "GET / HTTP/1.1\r\nHost: {to}\r\n\r\n").unwrap();
    assert!(wait_until(|| c.health_requests(v4(1)) > before));
    c.close_connections(v4(1)).unwrap();
    assert_eq!(read_reply(&mut fresh).unwrap().status, 200);
    assert!(closed_by_peer(&mut fresh), "closed only after the answer");
    c.set_fault(v4(1), Fault::None);

    // Closing again and again: each new connection is served until the next.
    for _ in 0..3 {
        let mut conn = connect(to, T).unwrap();
        assert_eq!(keep_alive_get(&mut conn, to, "/").unwrap().status, 200);
        c.close_connections(v4(1)).unwrap();
        assert!(closed_by_peer(&mut conn));
    }

    // `Down` still closes and refuses; closing a `Down` node does nothing;
    // back up, it serves.
    let mut conn = connect(to, T).unwrap();
    assert_eq!(keep_alive_get(&mut conn, to, "/").unwrap().status, 200);
    c.set_fault(v4(1), Fault::Down);
    assert!(refused(to));
    assert!(closed_by_peer(&mut conn));
    c.close_connections(v4(1)).unwrap();
    c.set_fault(v4(1), Fault::None);
    assert_eq!(get(to, "/").status, 200);
    assert_eq!(
        c.close_connections(v4(99)).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn close_connections_closes_a_connection_stuck_in_tls_hang() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::TlsHang);
    let mut held = connect(to, Duration::from_millis(100)).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // Nothing tells when the node has accepted it (no request arrives under
    // `TlsHang`): closed by one of the closes, each followed by a short read.
    let deadline = Instant::now() + T;
    let mut buf = [0u8; 64];
    loop {
        c.close_connections(v4(1)).unwrap();
        match held.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                assert!(Instant::now() < deadline, "a held connection not closed");
            }
            other => panic!("unexpected read on a held connection: {other:?}"),
        }
    }
    // Still listening.
    c.set_fault(v4(1), Fault::None);
    assert_eq!(get(to, "/").status, 200);
}

#[test]
fn fault_hang_reads_the_request_and_never_answers() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Hang);
    let started = Instant::now();
    let err = request(to, "GET", "/localnodes", Duration::from_millis(500)).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(wait_until(|| c.localnodes_requests(v4(1)) == 1));

    // Down closes a connection whose request hangs.
    let hung = std::thread::spawn(move || request(to, "GET", "/", T));
    assert!(wait_until(|| c.health_requests(v4(1)) == 1));
    let started = Instant::now();
    c.set_fault(v4(1), Fault::Down);
    match hung.join().unwrap() {
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::ConnectionReset
            ),
            "{e:?}"
        ),
        Ok(reply) => panic!("a hung request was answered: {reply:?}"),
    }
    assert!(started.elapsed() < T);

    c.set_fault(v4(1), Fault::None);
    assert_eq!(get(to, "/").status, 200);
}

#[test]
fn fault_delay_answers_normally_after_the_delay() {
    let c = start(2);
    let delay = Duration::from_millis(300);
    c.set_fault(v4(1), Fault::Delay(delay));
    let started = Instant::now();
    assert_eq!(sorted(localnodes(&c, v4(1))), strings(&c.nodes()));
    assert!(started.elapsed() >= delay);
    let started = Instant::now();
    assert_eq!(get(c.socket_addr(v4(1)), "/").status, 200);
    assert!(started.elapsed() >= delay);
}

#[test]
fn state_changes_while_a_request_is_in_flight() {
    let c = start(2);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Delay(Duration::from_millis(400)));
    let in_flight = std::thread::spawn(move || request(to, "GET", "/localnodes", T));
    // Counted at arrival, before the answer.
    assert!(wait_until(|| c.localnodes_requests(v4(1)) == 1));
    c.set_fault(v4(1), Fault::Status500);
    c.set_listed(v4(2), false);
    // The fault is the one at arrival; the list is the one when answering.
    let reply = in_flight.join().unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "[\"127.0.0.1\"]");
    assert_eq!(get(to, "/localnodes").status, 500);
}

#[test]
fn fault_status_500_on_every_path() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Status500);
    for path in ["/localnodes", "/", "/other"] {
        let reply = get(to, path);
        assert_eq!(reply.status, 500, "{path}");
        assert_eq!(reply.content_type(), Some("text/plain"));
        assert!(!reply.body.is_empty());
    }
}

#[test]
fn fault_garbage_is_not_json() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Garbage);
    let reply = get(to, "/localnodes");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, GARBAGE_BODY);
    assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_err());
    assert_eq!(get(to, "/").status, 200);
}

#[test]
fn fault_host_ids_adds_uuids_to_the_addresses() {
    let c = start(2);
    c.set_fault(v4(1), Fault::HostIds);
    let ids = c.host_ids();
    assert_eq!(ids.len(), HOST_IDS_PER_RESPONSE);
    assert!(ids.iter().all(|id| is_uuid(id)), "{ids:?}");
    let got = localnodes(&c, v4(1));
    let (uuids, addrs): (Vec<String>, Vec<String>) = got.into_iter().partition(|s| is_uuid(s));
    assert_eq!(sorted(uuids), sorted(ids));
    assert_eq!(sorted(addrs), strings(&c.nodes()));
    // Only the faulty node adds them.
    assert_eq!(sorted(localnodes(&c, v4(2))), strings(&c.nodes()));
}

#[test]
fn fault_empty_list_answers_empty_array() {
    let c = start(2);
    c.set_fault(v4(2), Fault::EmptyList);
    assert!(localnodes(&c, v4(2)).is_empty());
    assert_eq!(get(c.socket_addr(v4(2)), "/").status, 200);
}

#[test]
fn set_fault_all_and_unknown_nodes() {
    let c = start(3);
    c.set_fault_all(Fault::Down);
    for node in c.nodes() {
        assert!(refused(c.socket_addr(node)));
    }
    c.set_fault_all(Fault::None);
    for node in c.nodes() {
        assert_eq!(get(c.socket_addr(node), "/").status, 200);
    }
    assert_eq!(
        c.try_set_fault(v4(99), Fault::Hang).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    c.set_fault(v4(99), Fault::Hang);
    assert_eq!(c.fault(v4(99)), None);
}

#[test]
fn add_and_remove_nodes() {
    let c = start(2);
    c.add_node(v4(3)).unwrap();
    assert_eq!(c.nodes(), vec![v4(1), v4(2), v4(3)]);
    assert_eq!(sorted(localnodes(&c, v4(1))), strings(&c.nodes()));
    assert_eq!(get(c.socket_addr(v4(3)), "/").status, 200);
    assert_eq!(
        c.add_node(v4(3)).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );

    c.remove_node(v4(1));
    assert_eq!(c.nodes(), vec![v4(2), v4(3)]);
    assert!(refused(c.socket_addr(v4(1))));
    assert_eq!(sorted(localnodes(&c, v4(3))), strings(&[v4(2), v4(3)]));
    c.remove_node(v4(1));
    // A removed node can come back, with fresh counters.
    c.add_node(v4(1)).unwrap();
    assert_eq!(c.localnodes_requests(v4(1)), 0);
    assert_eq!(get(c.socket_addr(v4(1)), "/").status, 200);
}

#[test]
fn shutdown_frees_the_port() {
    let c = start(2);
    let port = c.port();
    get(c.socket_addr(v4(1)), "/");
    c.shutdown();
    c.shutdown();
    for node in c.nodes() {
        let to = SocketAddr::new(node, port);
        assert!(refused(to));
        std::net::TcpListener::bind(to).expect("port free after shutdown");
    }
    // Control calls after shutdown do not panic.
    c.set_fault(v4(1), Fault::Down);
    c.set_listed(v4(1), false);
    c.remove_node(v4(2));
    assert!(c.add_node(v4(3)).is_err());
    assert_eq!(c.health_requests(v4(1)), 1);
}

#[test]
fn dropping_the_last_handle_shuts_down() {
    let c = start(1);
    let to = c.socket_addr(v4(1));
    let other = c.clone();
    drop(c);
    assert_eq!(get(to, "/").status, 200);
    drop(other);
    assert!(refused(to));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dup = SimCluster::start(&[v4(1), v4(1)], 0).unwrap_err();
    assert_eq!(dup.kind(), io::ErrorKind::InvalidInput);
    // 192.0.2.1 (TEST-NET-1) is not a local address.
    let not_local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(SimCluster::start(&[v4(1), not_local], 0).is_err());
    let c = SimCluster::start(&[], 0).unwrap();
    assert_ne!(c.port(), 0);
    assert!(c.nodes().is_empty());
    assert!(c.add_node(not_local).is_err());
    assert!(c.nodes().is_empty());
    c.add_node(v4(1)).unwrap();
    assert_eq!(get(c.socket_addr(v4(1)), "/").status, 200);
}

#[test]
fn ipv6_loopback_node() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if std::net::TcpListener::bind((v6, 0)).is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let c = SimCluster::start(&[v6], 0).unwrap();
    assert_eq!(localnodes(&c, v6), vec!["::1".to_string()]);
    let to = c.socket_addr(v6);
    assert_eq!(get(to, "/").body, format!("healthy: {to}"));
    c.set_fault(v6, Fault::Down);
    assert!(refused(to));
    c.set_fault(v6, Fault::None);
    assert_eq!(get(to, "/").status, 200);
}

#[tokio::test]
async fn usable_from_inside_a_tokio_runtime() {
    let c = start(2);
    let to = c.socket_addr(v4(1));
    c.set_fault(v4(1), Fault::Down);
    assert!(tokio::net::TcpStream::connect(to).await.is_err());
    c.set_fault(v4(1), Fault::None);
    c.set_listed(v4(2), false);
    c.add_node(v4(3)).unwrap();
    c.remove_node(v4(3));
    let mut stream = tokio::time::timeout(T, tokio::net::TcpStream::connect(to))
        .await
        .expect("connect in time")
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /localnodes HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(parse(&buf).unwrap().body, "[\"127.0.0.1\"]");
    // Dropped inside the runtime: must not panic.
    drop(c);
}
