//! The probe against scripted HTTP servers on loopback: framings, kept and
//! dropped connections, and every way a response can be broken. Each server
//! answers a fixed script; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use hyper::StatusCode;

use super::{HealthProbe, HEAD_BUFFER_BYTES};
use crate::nodes::client::FetchError;

/// Bound on probes expected to finish.
const T: Duration = Duration::from_secs(5);

/// Body limit, as the tracker's.
const MAX_BODY: usize = 4096;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhealthy: 127.0.0.1:1";

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
    5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";

/// What the server does for one request.
#[derive(Clone, Copy)]
enum Reply {
    /// Writes these bytes at once.
    Whole(&'static [u8]),
    /// Writes them one byte at a time.
    Trickle(&'static [u8]),
    /// Writes nothing and keeps the connection open.
    Silence,
    /// Closes the connection without answering.
    Hangup,
    /// Writes the first bytes, then, a moment later and unasked, the second.
    ThenUnasked(&'static [u8], &'static [u8]),
}

/// What the server does after a connection's last reply.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Close,
    Hold,
}

/// A server answering the `n`th connection it accepts with `script[n]`.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(script: Vec<(Vec<Reply>, After)>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), requests.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            for (replies, after) in script {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                held.push(tokio::spawn(async move {
                    for reply in replies {
                        let Some(request) = read_request(&mut conn).await else {
                            return;
                        };
                        seen.lock().unwrap().push(request);
                        match reply {
                            Reply::Whole(bytes) => {
                                let _ = conn.write_all(bytes).await;
                            }
                            Reply::Trickle(bytes) => {
                                for b in bytes {
                                    let _ = conn.write_all(&[*b]).await;
                                    tokio::time::sleep(Duration::from_micros(200)).await;
                                }
                            }
                            Reply::Silence => {}
                            Reply::Hangup => return,
                            Reply::ThenUnasked(bytes, unasked) => {
                                let _ = conn.write_all(bytes).await;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                let _ = conn.write_all(unasked).await;
                            }
                        }
                    }
                    if after == After::Hold {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }));
            }
            // No more connections are accepted: the listener stays open so
            // that a connect does not fail, but nobody answers.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(held);
        });
        Scripted {
            addr,
            accepted,
            requests,
            task,
        }
    }

    fn probe(&self) -> HealthProbe {
        HealthProbe::new(self.addr, &self.addr.to_string(), None, MAX_BODY)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads one request head; `None` when the client closed first.
async fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn hold(replies: &[Reply]) -> (Vec<Reply>, After) {
    (replies.to_vec(), After::Hold)
}

fn close(replies: &[Reply]) -> (Vec<Reply>, After) {
    (replies.to_vec(), After::Close)
}

#[tokio::test]
async fn probes_share_one_connection_and_send_the_host() {
    let s = Scripted::start(vec![hold(&[Reply::Whole(OK); 3])]).await;
    let mut probe = s.probe();
    for _ in 0..3 {
        assert_eq!(probe.probe(T).await.unwrap(), 200);
        assert!(probe.has_kept_connection());
    }
    assert_eq!(s.accepted(), 1);
    let requests = s.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0],
        format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr)
    );
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_are_read_to_their_end() {
    let s = Scripted::start(vec![hold(&[Reply::Whole(CHUNKED), Reply::Whole(OK)])]).await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    // The next response is read from where the chunked one ended.
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert!(probe.has_kept_connection());
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn responses_arriving_a_byte_at_a_time() {
    let s = Scripted::start(vec![hold(&[Reply::Trickle(CHUNKED), Reply::Trickle(OK)])]).await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn interim_responses_and_bodiless_statuses() {
    let s = Scripted::start(vec![hold(&[
        Reply::Whole(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        Reply::Whole(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        // 204 and 304 have no body even with a Content-Length.
        Reply::Whole(b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n"),
        Reply::Whole(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
        Reply::Whole(OK),
    ])])
    .await;
    let mut probe = s.probe();
    for want in [200, 200, 204, 304, 200] {
        assert_eq!(probe.probe(T).await.unwrap(), want);
        assert!(probe.has_kept_connection());
    }
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn error_statuses_are_returned_and_the_connection_kept() {
    let s = Scripted::start(vec![hold(&[
        Reply::Whole(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"),
        Reply::Whole(OK),
    ])])
    .await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 503);
    assert!(probe.has_kept_connection());
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn connections_that_cannot_be_reused_are_not_kept() {
    let s = Scripted::start(vec![
        // Body up to the end of the connection.
        close(&[Reply::Whole(b"HTTP/1.1 200 OK\r\n\r\nhealthy")]),
        hold(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
        )]),
        hold(&[Reply::Whole(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )]),
        // Bytes after the body.
        hold(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        )]),
        // Chunked with Connection: close.
        hold(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
        )]),
        // Both framings: read as chunked, not trusted further.
        hold(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
        )]),
        // A transfer coding other than chunked runs to the end.
        close(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nokmore",
        )]),
        // HTTP/1.0 with the body up to the end.
        close(&[Reply::Whole(b"HTTP/1.0 200 OK\r\n\r\nhealthy")]),
        hold(&[Reply::Whole(OK)]),
    ])
    .await;
    let mut probe = s.probe();
    for n in 1..=8 {
        let got = probe.probe(T).await;
        assert_eq!(
            got.as_ref().ok(),
            Some(&StatusCode::OK),
            "connection {n}: {got:?}"
        );
        assert!(!probe.has_kept_connection(), "connection {n}");
        assert_eq!(s.accepted(), n);
    }
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert!(probe.has_kept_connection());
}

#[tokio::test]
async fn a_kept_connection_closed_by_the_node_is_replaced_within_the_probe() {
    let s = Scripted::start(vec![close(&[Reply::Whole(OK)]), hold(&[Reply::Whole(OK)])]).await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    // The node closes its side after the first answer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert!(probe.has_kept_connection());
    assert_eq!(s.accepted(), 2);
}

#[tokio::test]
async fn a_kept_connection_closed_under_the_request_is_retried_once() {
    let s = Scripted::start(vec![
        hold(&[Reply::Whole(OK), Reply::Hangup]),
        hold(&[Reply::Whole(OK), Reply::Hangup]),
        hold(&[Reply::Hangup]),
        hold(&[Reply::Whole(OK)]),
    ])
    .await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    // Open when checked, closed once the request is written: sent again on
    // a new connection.
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert_eq!(s.accepted(), 2);
    // The same, but the new connection is closed too: a failure, not a
    // third try.
    let err = probe.probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Closed(m) if m.contains("closed before the response")),
        "{err:?}"
    );
    assert_eq!(s.accepted(), 3);
    assert!(!probe.has_kept_connection());
    assert_eq!(probe.probe(T).await.unwrap(), 200);
}

#[tokio::test]
async fn a_response_cut_short_on_a_kept_connection_is_not_retried() {
    let s = Scripted::start(vec![
        close(&[Reply::Whole(OK), Reply::Whole(b"HTTP/1.1 20")]),
        hold(&[Reply::Whole(OK)]),
    ])
    .await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    let err = probe.probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Closed(m) if m.contains("inside the response head")),
        "{err:?}"
    );
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn a_kept_connection_with_unasked_bytes_is_not_used() {
    // A node that times the idle connection out with a 408 before closing:
    // the 408 is not taken for the answer to the next probe.
    let s = Scripted::start(vec![
        hold(&[Reply::ThenUnasked(
            OK,
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
        )]),
        hold(&[Reply::Whole(OK)]),
    ])
    .await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert_eq!(s.accepted(), 2);
}

#[tokio::test]
async fn a_new_connection_closed_before_the_response_is_a_failure() {
    let s = Scripted::start(vec![close(&[]), hold(&[Reply::Whole(OK)])]).await;
    let mut probe = s.probe();
    let err = probe.probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Closed(m) if m.contains("closed")),
        "{err:?}"
    );
    // Not retried: a node that closes every new connection is down.
    assert_eq!(s.accepted(), 1);
    assert_eq!(probe.probe(T).await.unwrap(), 200);
}

/// `parts` joined, for the life of the test binary.
fn leak(parts: &[&[u8]]) -> &'static [u8] {
    Box::leak(parts.concat().into_boxed_slice())
}

#[tokio::test]
async fn bodies_above_the_limit_are_refused_unread() {
    // Two chunks of 2048 bytes fit the 4096-byte limit; a third does not,
    // and is refused on its first byte (hyper does not show the size line).
    let chunk = [&b"800\r\n"[..], &[b'x'; 2048], b"\r\n"].concat();
    let chunked = leak(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunk,
        &chunk,
        b"1000\r\nx",
    ]);
    // No framing: the body runs to the end of a connection that stays open.
    let unframed = leak(&[b"HTTP/1.1 200 OK\r\n\r\n", &[b'x'; 5000]]);
    // Trailer fields that never end.
    let field = b"X-Trailer: 0123456789abcdef0123456789abcdef\r\n";
    let trailers = leak(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        &field.repeat(64 * 1024 / field.len()),
    ]);
    let s = Scripted::start(vec![
        hold(&[Reply::Whole(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4097\r\n\r\n",
        )]),
        hold(&[Reply::Whole(chunked)]),
        hold(&[Reply::Whole(unframed)]),
        hold(&[Reply::Whole(trailers)]),
    ])
    .await;
    let mut probe = s.probe();
    for n in 1..=4 {
        let err = probe.probe(T).await.unwrap_err();
        // Endless trailer fields are cut by hyper's own limit on them.
        let expected = match n {
            4 => matches!(&err, FetchError::Body(m) if m.contains("trailers")),
            _ => matches!(err, FetchError::TooLarge(MAX_BODY)),
        };
        assert!(expected, "{n}: {err:?}");
        assert!(!probe.has_kept_connection());
    }
    assert_eq!(s.accepted(), 4);
}

/// What a broken response must fail with.
type Expected = fn(&FetchError) -> bool;

#[tokio::test]
async fn broken_responses_are_failures_that_name_the_problem() {
    let huge_head = leak(&[b"HTTP/1.1 200 OK\r\nX-Long: ", &[b'a'; HEAD_BUFFER_BYTES]]);
    let many_interim = leak(&[&b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9)]);
    let many_headers = leak(&[b"HTTP/1.1 200 OK\r\n", &b"X: 1\r\n".repeat(101), b"\r\n"]);
    let cases: [(&'static [u8], Expected); 9] = [
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            |e| matches!(e, FetchError::Request(m) if m.contains("not an HTTP/1 response")),
        ),
        (
            huge_head,
            |e| matches!(e, FetchError::Request(m) if m.contains("larger than 4096 bytes")),
        ),
        (
            // hyper skips interim responses however many; the close after
            // them cuts the response short (bounded by the timeout otherwise).
            many_interim,
            |e| matches!(e, FetchError::Closed(m) if m.contains("inside the response head")),
        ),
        (
            many_headers,
            |e| matches!(e, FetchError::Request(m) if m.contains("more than 100 header fields")),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            |e| matches!(e, FetchError::Request(m) if m.contains("invalid content-length")),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            |e| matches!(e, FetchError::Request(m) if m.contains("invalid content-length")),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            |e| matches!(e, FetchError::Request(m) if m.contains("invalid content-length")),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            |e| matches!(e, FetchError::Body(m) if m.contains("chunk size")),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            |e| matches!(e, FetchError::Closed(m) if m.contains("closed inside the body")),
        ),
    ];
    for (response, expected) in cases {
        let s = Scripted::start(vec![close(&[Reply::Whole(response)])]).await;
        let mut probe = s.probe();
        let err = probe.probe(T).await.unwrap_err();
        assert!(
            expected(&err),
            "{:?}: {err:?}",
            String::from_utf8_lossy(&response[..response.len().min(60)])
        );
        assert!(!probe.has_kept_connection());
    }
}

#[tokio::test]
async fn a_silent_node_is_bounded_by_the_timeout() {
    let s = Scripted::start(vec![hold(&[Reply::Silence])]).await;
    let mut probe = s.probe();
    let started = Instant::now();
    let err = probe.probe(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!probe.has_kept_connection());
}

#[tokio::test]
async fn a_refused_connection_is_told_apart_from_other_connect_failures() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut probe = HealthProbe::new(addr, &addr.to_string(), None, MAX_BODY);
    let err = probe.probe(T).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Refused(m) if m.contains("refused")),
        "{err:?}"
    );
}

#[test]
fn a_prober_holds_no_hyper_state_between_probes() {
    // What a prober's task keeps for a node while it sleeps: the probe, the
    // watch on its connection, and the future of its next probe. hyper's
    // connection (its buffers, its request queue) and the probe's timer are
    // boxed and live only while a probe runs.
    let mut probe = HealthProbe::new("127.0.0.1:1".parse().unwrap(), "h", None, MAX_BODY);
    assert!(std::mem::size_of::<HealthProbe>() <= 256);
    let closed = std::mem::size_of_val(&probe.closed());
    assert!(closed <= 64, "{closed}");
    let future = std::mem::size_of_val(&probe.probe(T));
    assert!(future <= 128, "{future}");
}

#[tokio::test]
async fn a_node_that_closes_every_connection_at_once_fails_without_waiting_for_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let mut probe = HealthProbe::new(addr, &addr.to_string(), None, MAX_BODY);
    for _ in 0..20 {
        let e = probe.probe(Duration::from_secs(60)).await.unwrap_err();
        assert!(!e.to_string().contains("timed out"), "{e}");
        assert!(!probe.has_kept_connection());
    }
    server.abort();
}

#[tokio::test]
async fn a_kept_connection_closed_by_the_node_is_noticed_between_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, closing) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        read_request(&mut conn).await.unwrap();
        conn.write_all(OK).await.unwrap();
        let _ = closing.await;
        drop(conn);
        // An idle close, as Alternator may do: the node is still up.
        let (mut conn, _) = listener.accept().await.unwrap();
        read_request(&mut conn).await.unwrap();
        conn.write_all(OK).await.unwrap();
    });
    let mut probe = HealthProbe::new(addr, &addr.to_string(), None, MAX_BODY);
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert!(probe.has_kept_connection());
    close.send(()).unwrap();
    tokio::time::timeout(T, probe.closed())
        .await
        .expect("the close is noticed");
    // The probe that follows reconnects and passes: a close is no failure.
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    server.await.unwrap();
}

#[tokio::test]
async fn an_idle_kept_connection_is_no_news() {
    let s = Scripted::start(vec![hold(&[Reply::Whole(OK)])]).await;
    let mut probe = s.probe();
    assert_eq!(probe.probe(T).await.unwrap(), 200);
    assert!(probe.has_kept_connection());
    // Left-over read readiness must not wake it.
    let woke = tokio::time::timeout(Duration::from_millis(200), probe.closed()).await;
    assert!(woke.is_err(), "woken with nothing to read");
}
