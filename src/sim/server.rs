//! One simulated node's HTTP server: the accept loop, the connections and the
//! request handler.

use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::{Counters, Fault, Shared, GARBAGE_BODY};

/// Pause after a failed `accept` (e.g. out of file descriptors), so that the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A running node server. Stopping it (or dropping it) closes the listener
/// and every connection it accepted.
pub(super) struct ServerHandle {
    /// `true` (or dropped) = stop.
    kill: watch::Sender<bool>,
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
    ) -> io::Result<ServerHandle> {
        let listener = {
            // Only sets the thread-local runtime context for `from_std`; it
            // does not block, so it is fine inside a caller's runtime too.
            let _guard = rt.enter();
            TcpListener::from_std(listener)?
        };
        let (kill, kill_rx) = watch::channel(false);
        let (alive, done) = mpsc::channel();
        let node = Arc::new(Node {
            addr,
            counters,
            shared,
        });
        rt.spawn(accept_loop(listener, node, kill_rx, alive));
        Ok(ServerHandle { kill, done })
    }

    /// Tells every task of the server to stop; with `wait`, waits up to that
    /// long for them to end. Returns `false` if they did not end in time.
    pub(super) fn stop(self, wait: Option<Duration>) -> bool {
        let ServerHandle { kill, done } = self;
        // The receivers see the value, or else the sender's drop; either stops them.
        let _ = kill.send(true);
        drop(kill);
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
    counters: Arc<Counters>,
    shared: Arc<Shared>,
}

/// Resolves when the server is told to stop.
async fn killed(kill: &mut watch::Receiver<bool>) {
    // `Err` means the sender was dropped, which also means stop.
    let _ = kill.wait_for(|&k| k).await;
}

async fn accept_loop(
    listener: TcpListener,
    node: Arc<Node>,
    mut kill: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            biased;
            () = killed(&mut kill) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(node = %node.addr, %peer, "simulated node accepted a connection");
                    tokio::spawn(connection(
                        stream,
                        node.clone(),
                        kill.clone(),
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
    alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let addr = node.addr;
    let service = service_fn(move |req| handle(req, node.clone()));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        biased;
        // Dropping the connection future closes the socket.
        () = killed(&mut kill) => debug!(node = %addr, "simulated node closed a connection"),
        served = conn => if let Err(e) = served {
            debug!(node = %addr, error = %e, "simulated node connection ended with an error");
        },
    }
    drop(alive);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    LocalNodes,
    Health,
    Other,
}

async fn handle(
    req: Request<Incoming>,
    node: Arc<Node>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
        Fault::Hang | Fault::Down => return std::future::pending().await,
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Fault::None
        }
        other => other,
    };
    if fault == Fault::Status500 {
        return Ok(response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "simulated internal server error",
        ));
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
            _ => {
                let mut entries: Vec<String> = node
                    .shared
                    .listed()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
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
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
