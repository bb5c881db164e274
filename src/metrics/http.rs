//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, and `/nodes`, the
//! operator's view of membership (asked of the node tracker for each
//! request).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::debug;

use super::Metrics;
use crate::nodes::view::ViewRequests;

/// Connections served at once; more are closed as soon as accepted.
/// A Prometheus server or two and a load balancer's probes need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no complete request head for this long is
/// closed; this also closes idle keep-alive connections.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes a request head (request line and headers) may have;
/// a longer one gets 431.
pub const MAX_HEADER_BYTES: usize = 8192;
/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 32;

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What `/readyz` answers: 200 when `ready`, else 503, with `text` (the
/// reasons, one a line) as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readyz {
    pub ready: bool,
    pub text: String,
}

/// Builds the `/readyz` answer; called on the control plane for each request.
pub type ReadyCheck = Arc<dyn Fn() -> Readyz + Send + Sync>;

/// How long `/nodes` waits for the tracker's view before answering 503.
pub const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint serves from.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub ready: ReadyCheck,
    /// Where `/nodes` asks for the tracker's view.
    pub views: ViewRequests,
}

/// Serves HTTP/1.1 on `listener` until `shutdown` becomes `true` (or its
/// sender is dropped), then closes the listener and every connection and
/// returns.
///
/// - `GET /metrics`: 200, [`Metrics::render`], `Content-Type:`
///   [`super::CONTENT_TYPE`].
/// - `GET /healthz`: 200 `ok` while the process runs (liveness).
/// - `GET /readyz`: what `ready()` says: 200 when ready, else 503, the
///   reasons in the body.
/// - `GET /nodes`: 200, the tracker's [`NodesView`](crate::nodes::view::NodesView)
///   as JSON; 503 when the tracker does not answer within [`VIEW_TIMEOUT`].
/// - `HEAD` works like `GET`; another method on those paths gets 405;
///   any other path 404.
///
/// Bounded: at most [`MAX_CONNECTIONS`] connections, request heads of at
/// most [`MAX_HEADER_BYTES`] bytes and [`MAX_HEADERS`] fields, read within
/// [`HEADER_READ_TIMEOUT`]. Request bodies are ignored. Runs on the
/// caller's tokio runtime (the control plane); `ready` is called there, so
/// it must be cheap and must not block.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(8192)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        debug!(%peer, "metrics endpoint: too many connections, closing");
                        continue;
                    }
                    connections.spawn(connection(builder.clone(), stream, endpoints.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    // Aborting a connection's task drops its socket, which closes it.
    connections.shutdown().await;
}

/// Resolves once `shutdown` is `true`, or its sender is gone (which also
/// means stop). Returns `()` so that no `watch::Ref` lives across an await.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

async fn connection(builder: http1::Builder, stream: TcpStream, endpoints: Endpoints) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let endpoints = endpoints.clone();
        async move { Ok::<_, Infallible>(respond(&req, &endpoints).await) }
    });
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, "metrics endpoint: connection ended with an error");
    }
}

async fn respond(req: &Request<Incoming>, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz" | "/nodes");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/nodes" => nodes(&endpoints.views).await,
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(endpoints.metrics.render())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(super::CONTENT_TYPE));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok"),
        _ => {
            let report = (endpoints.ready)();
            let status = match report.ready {
                true => StatusCode::OK,
                false => StatusCode::SERVICE_UNAVAILABLE,
            };
            text(status, report.text)
        }
    }
}

/// `/nodes`: the tracker's view as JSON.
async fn nodes(views: &ViewRequests) -> Response<Full<Bytes>> {
    let (reply, view) = oneshot::channel();
    let asked = async {
        views.send(reply).await.ok()?;
        view.await.ok()
    };
    let Ok(Some(view)) = tokio::time::timeout(VIEW_TIMEOUT, asked).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node tracker did not answer",
        );
    };
    let body = match serde_json::to_vec(&view) {
        Ok(body) => body,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
