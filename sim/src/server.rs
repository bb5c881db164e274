//! One simulated node's HTTP(S) server: the accept loop, the connections
//! (with their TLS handshake) and the request handler.
//!
//! Two signals reach the connection tasks, each through its own watch
//! channel: `kill` (the node goes `Down` or away: the listener and every
//! connection close at once) and `close` (the node closes the connections
//! it has open, as Alternator does with idle keep-alive connections, and
//! goes on listening).

use std::convert::Infallible;
use std::future::{pending, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::{
    Counters, Fault, Shared, ENDLESS_CHUNK_BYTES, ENDLESS_CHUNK_INTERVAL, GARBAGE_BODY,
    HUGE_BODY_BYTES, MANY_ENTRIES,
};

/// Size of each chunk of a `HugeBody` answer.
const HUGE_CHUNK_BYTES: usize = 64 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors), so that the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A running node server. Stopping it (or dropping it) closes the listener
/// and every connection it accepted.
pub(super) struct ServerHandle {
    /// `true` (or dropped) = stop.
    kill: watch::Sender<bool>,
    /// Bumped to close the connections open at that moment; each connection
    /// remembers the value when it was accepted and closes once it changes.
    close: watch::Sender<u64>,
    /// Every task of this server holds a clone of the matching sender; the
    /// channel disconnects once they have all ended, i.e. once every socket
    /// of this server is closed. Nothing is ever sent on it.
    done: mpsc::Receiver<()>,
}

impl ServerHandle {
    /// Registers `listener` with the runtime behind `rt` and spawns its
    /// accept loop there.
    pub(super) fn start(
        rt: &tokio::runtime::Handle,
        listener: std::net::TcpListener,
        addr: IpAddr,
        counters: Arc<Counters>,
        shared: Arc<Shared>,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<ServerHandle> {
        let local = listener.local_addr()?;
        let listener = {
            // Only sets the thread-local runtime context for `from_std`; it
            // does not block, so it is fine inside a caller's runtime too.
            let _guard = rt.enter();
            TcpListener::from_std(listener)?
        };
        let (kill, kill_rx) = watch::channel(false);
        let (close, close_rx) = watch::channel(0);
        let (alive, done) = mpsc::channel();
        let node = Arc::new(Node {
            addr,
            local,
            counters,
            shared,
            tls,
        });
        let signals = Signals {
            kill: kill_rx,
            close: close_rx,
        };
        rt.spawn(accept_loop(listener, node, signals, alive));
        Ok(ServerHandle { kill, close, done })
    }

    /// Closes every connection accepted so far, and goes on accepting and
    /// serving new ones. An idle connection closes at once; one with a
    /// request under way closes once its response is written (never under a
    /// request, as a server closing idle keep-alive connections does); one
    /// not speaking HTTP yet (a TLS handshake under way, or held by
    /// `TlsHang`) closes at once. Returns without waiting for them.
    pub(super) fn close_connections(&self) {
        self.close
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Tells every task of the server to stop; with `wait`, waits up to that
    /// long for them to end. Returns `false` if they did not end in time.
    pub(super) fn stop(self, wait: Option<Duration>) -> bool {
        let ServerHandle { kill, close, done } = self;
        // The receivers see the value, or else the sender's drop; either stops them.
        let _ = kill.send(true);
        drop(kill);
        drop(close);
        match wait {
            None => true,
            Some(timeout) => matches!(
                done.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Disconnected) | Ok(())
            ),
        }
    }
}

/// What a connection's handler needs to know about its node.
struct Node {
    addr: IpAddr,
    /// The address it listens on (for `Location` under `Fault::Redirect`).
    local: SocketAddr,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
}

/// The server's two signals, as its tasks receive them.
struct Signals {
    kill: watch::Receiver<bool>,
    close: watch::Receiver<u64>,
}

/// Resolves when the server is told to stop.
async fn killed(kill: &mut watch::Receiver<bool>) {
    // `Err` means the sender was dropped, which also means stop.
    let _ = kill.wait_for(|&k| k).await;
}

/// What tells one connection to close: the close signal moving past the
/// value it had when the connection was accepted.
struct Closing {
    close: watch::Receiver<u64>,
    accepted_at: u64,
}

impl Closing {
    /// Resolves when the node closes its connections. Never once the server
    /// is gone: the kill signal closes the connection then.
    async fn wait(&mut self) {
        let accepted_at = self.accepted_at;
        if self.close.wait_for(|&g| g != accepted_at).await.is_err() {
            pending::<()>().await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    node: Arc<Node>,
    signals: Signals,
    alive: mpsc::Sender<()>,
) {
    let Signals { mut kill, close } = signals;
    loop {
        tokio::select! {
            biased;
            () = killed(&mut kill) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(node = %node.addr, %peer, "simulated node accepted a connection");
                    // Read here, not in the task: a close asked for after
                    // this accept closes this connection too.
                    let closing = Closing {
                        accepted_at: *close.borrow(),
                        close: close.clone(),
                    };
                    tokio::spawn(connection(
                        stream,
                        node.clone(),
                        kill.clone(),
                        closing,
                        alive.clone(),
                    ));
                }
                Err(e) => {
                    debug!(node = %node.addr, error = %e, "simulated node accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    // Dropping the listener here closes the port; `alive` goes with it.
    drop(listener);
    drop(alive);
}

async fn connection(
    stream: TcpStream,
    node: Arc<Node>,
    mut kill: watch::Receiver<bool>,
    closing: Closing,
    alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let addr = node.addr;
    tokio::select! {
        biased;
        // Dropping the connection future closes the socket.
        () = killed(&mut kill) => debug!(node = %addr, "simulated node closed a connection"),
        () = serve(stream, node, closing) => {}
    }
    drop(alive);
}

/// Serves one accepted connection until it ends (or the node closes it):
/// the TLS handshake if the cluster is HTTPS, then HTTP/1.1 with keep-alive.
async fn serve(stream: TcpStream, node: Arc<Node>, mut closing: Closing) {
    let addr = node.addr;
    if node.shared.fault_of(addr) == Fault::TlsHang {
        debug!(node = %addr, "simulated node holds a connection without a handshake");
        // Swallow whatever arrives and never answer, until the client closes
        // (or the node closes or kills the connection).
        let mut stream = stream;
        let mut sink = [0u8; 4096];
        let swallow = async { while let Ok(1..) = stream.read(&mut sink).await {} };
        tokio::select! {
            () = closing.wait() => debug!(node = %addr, "simulated node closed a connection"),
            () = swallow => {}
        }
        return;
    }
    match node.tls.clone() {
        None => serve_http(TokioIo::new(stream), node, closing).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                () = closing.wait() => {
                    debug!(node = %addr, "simulated node closed a connection during the handshake");
                    return;
                }
                handshake = acceptor.accept(stream) => handshake,
            };
            match handshake {
                Ok(tls) => serve_http(TokioIo::new(tls), node, closing).await,
                Err(e) => debug!(node = %addr, error = %e, "simulated node TLS handshake failed"),
            }
        }
    }
}

async fn serve_http<I>(io: I, node: Arc<Node>, mut closing: Closing)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let addr = node.addr;
    let service = service_fn(move |req| handle(req, node.clone()));
    let mut conn = pin!(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = closing.wait() => {
            // Idle: closed at once; under a request: once its response is
            // written.
            debug!(node = %addr, "simulated node closes a connection");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        debug!(node = %addr, error = %e, "simulated node connection ended with an error");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    LocalNodes,
    Health,
    Other,
}

async fn handle(req: Request<Incoming>, node: Arc<Node>) -> Result<Response<SimBody>, Infallible> {
    let route = match (req.method(), req.uri().path()) {
        (&Method::GET, "/localnodes") => Route::LocalNodes,
        (&Method::GET, "/") => Route::Health,
        _ => Route::Other,
    };
    match route {
        Route::LocalNodes => node.counters.localnodes.fetch_add(1, Ordering::Relaxed),
        Route::Health => node.counters.health.fetch_add(1, Ordering::Relaxed),
        Route::Other => 0,
    };
    let fault = node.shared.fault_of(node.addr);
    debug!(
        node = %node.addr,
        method = %req.method(),
        uri = %req.uri(),
        ?fault,
        "simulated node request"
    );
    let fault = match fault {
        // `Down`: the connection is about to be closed by the stop signal.
        // `TlsHang` on a connection opened before it: hang too.
        Fault::Hang | Fault::Down | Fault::TlsHang => return std::future::pending().await,
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Fault::None
        }
        other => other,
    };
    match fault {
        Fault::Status500 => {
            return Ok(response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "simulated internal server error",
            ))
        }
        Fault::Redirect => {
            let scheme = if node.shared.https { "https" } else { "http" };
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = format!("{scheme}://{}{target}", node.local);
            let mut resp = response(StatusCode::FOUND, "text/plain", "redirect");
            if let Ok(value) = HeaderValue::try_from(location) {
                resp.headers_mut().insert(LOCATION, value);
            }
            return Ok(resp);
        }
        Fault::HugeBody => {
            return Ok(with_body(
                StatusCode::OK,
                "application/json",
                SimBody::Huge {
                    remaining: HUGE_BODY_BYTES,
                },
            ))
        }
        Fault::EndlessChunked => {
            return Ok(with_body(
                StatusCode::OK,
                "application/json",
                SimBody::Endless {
                    sleep: Box::pin(tokio::time::sleep(ENDLESS_CHUNK_INTERVAL)),
                    first: true,
                },
            ))
        }
        _ => {}
    }
    Ok(match route {
        Route::Other => response(StatusCode::NOT_FOUND, "text/plain", "not found"),
        Route::Health => {
            let host = req
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .unwrap_or_default();
            response(StatusCode::OK, "text/plain", format!("healthy: {host}"))
        }
        Route::LocalNodes => match fault {
            Fault::Garbage => response(StatusCode::OK, "application/json", GARBAGE_BODY),
            Fault::EmptyList => response(StatusCode::OK, "application/json", "[]"),
            Fault::ManyEntries => response(StatusCode::OK, "application/json", many_entries()),
            _ => {
                let Some(listed) = node.shared.localnodes(node.addr, req.uri().query()) else {
                    // Removed while the request was in flight: being closed.
                    return std::future::pending().await;
                };
                let mut entries: Vec<String> = listed.iter().map(ToString::to_string).collect();
                if fault == Fault::HostIds {
                    entries.extend(node.shared.host_ids.iter().cloned());
                }
                node.shared.shuffle(&mut entries);
                // Serializing strings cannot fail; fall back to `[]` anyway.
                let body = serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into());
                response(StatusCode::OK, "application/json", body)
            }
        },
    })
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    with_body(status, content_type, SimBody::Full(Some(body.into())))
}

fn with_body(status: StatusCode, content_type: &'static str, body: SimBody) -> Response<SimBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The `ManyEntries` body, built once per process.
fn many_entries() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let entries: Vec<String> = (1..=MANY_ENTRIES as u32)
            .map(|i| Ipv4Addr::from(0x0A00_0000 + i).to_string())
            .collect();
        Bytes::from(serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into()))
    })
    .clone()
}

/// `len` bytes of `"127.0.0.1",` repeated, starting with `[` if `first`.
fn filler(len: usize, first: bool) -> Bytes {
    const ITEM: &[u8] = b"\"127.0.0.1\",";
    let mut buf = BytesMut::with_capacity(len + ITEM.len());
    if first {
        buf.extend_from_slice(b"[");
    }
    while buf.len() < len {
        buf.extend_from_slice(ITEM);
    }
    buf.truncate(len);
    buf.freeze()
}

/// A `HugeBody` chunk, built once per process (clones of `Bytes` share it).
fn huge_chunk(first: bool) -> Bytes {
    static CHUNKS: OnceLock<[Bytes; 2]> = OnceLock::new();
    cached(&CHUNKS, HUGE_CHUNK_BYTES, first)
}

/// An `EndlessChunked` chunk, built once per process.
fn endless_chunk(first: bool) -> Bytes {
    static CHUNKS: OnceLock<[Bytes; 2]> = OnceLock::new();
    cached(&CHUNKS, ENDLESS_CHUNK_BYTES, first)
}

fn cached(cell: &OnceLock<[Bytes; 2]>, len: usize, first: bool) -> Bytes {
    let [opening, rest] = cell.get_or_init(|| [filler(len, true), filler(len, false)]);
    if first {
        opening.clone()
    } else {
        rest.clone()
    }
}

/// A response body: whole, or streamed without being held in memory.
pub(super) enum SimBody {
    /// The whole body (`None` once sent).
    Full(Option<Bytes>),
    /// `HugeBody`: `remaining` more bytes of filler, `Content-Length` known.
    Huge { remaining: u64 },
    /// `EndlessChunked`: a chunk after each sleep, forever.
    Endless {
        sleep: Pin<Box<tokio::time::Sleep>>,
        first: bool,
    },
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            SimBody::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Huge { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let first = *remaining == HUGE_BODY_BYTES;
                let len = (*remaining).min(HUGE_CHUNK_BYTES as u64);
                *remaining -= len;
                // `len` is at most `HUGE_CHUNK_BYTES`, so it fits a usize.
                let data = huge_chunk(first).slice(..len as usize);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            SimBody::Endless { sleep, first } => {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + ENDLESS_CHUNK_INTERVAL);
                let data = endless_chunk(*first);
                *first = false;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(body) => body.is_none(),
            SimBody::Huge { remaining } => *remaining == 0,
            SimBody::Endless { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            SimBody::Huge { remaining } => SizeHint::with_exact(*remaining),
            SimBody::Endless { .. } => SizeHint::default(),
        }
    }
}
