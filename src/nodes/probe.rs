//! The health probe: `GET /` on one node, over a connection kept open from
//! one probe to the next.
//!
//! Why not the poller's pooled client: memory. A prober lives as long as its
//! node is listed and keeps a connection to it; through hyper's pooled client
//! each such connection cost about 20 KiB (buffers that grow, the pool's
//! entry, a task per connection), 20 MiB for a thousand nodes, twice the rest
//! of the server.
//!
//! So hyper is used at the connection level, and only while a probe runs:
//! each probe does hyper's HTTP/1 handshake on the kept TCP or TLS stream,
//! sends `GET /`, reads the response, and takes the stream back
//! ([`Connection::into_parts`]) when hyper would keep the connection alive.
//! Between probes a node costs its stream and nothing else. Why not keep
//! hyper's `SendRequest` from one probe to the next: each one holds a request
//! queue whose first block (32 requests' room, about 8 KiB) stays allocated
//! and fills as probes go by; with its read buffer, that is 13 KiB a node
//! measured (26.7 MiB for a thousand nodes instead of 13.6). A handshake
//! costs 14 allocations (28 KiB, most of it hyper's write buffer and request
//! queue), freed when the probe ends.
//!
//! CPU: the control thread runs every probe, so a probe of a healthy node
//! is about two polls of its task (see `Driven::run`), not the four or
//! five it took while hyper's `ready()` was awaited first and the response
//! was taken only on the poll after the one that read it. hyper's exchange
//! still costs the control thread 10 to 20% more than the hand-written
//! HTTP/1.1 it replaced (1,000 nodes, measured); the probes' shared start
//! grid in the driver (`on_grid`) more than makes up for it.
//!
//! hyper reads the HTTP/1.1 (status, interim responses, the body by its
//! framing, whether the connection stays open); what is ours is the
//! connection's lifetime. A kept connection that the node closed while idle
//! (or wrote to unasked, such as a `408` before closing) is dropped before it
//! is used; one that turns out closed only once the request is written,
//! before any byte of an answer, is replaced, once, within the same probe:
//! `GET /` is safe to send again.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};

use super::http::{connect, error_chain, FetchError, NodeTls, Stream};

/// The probe's read buffer: the whole response head must fit (Alternator's
/// is about 150 bytes, leaving room for what a proxy in front may add);
/// bodies pass through it in pieces of this size.
pub const HEAD_BUFFER_BYTES: usize = 4096;

/// Most header fields read in a response head: hyper's default, named here
/// for the error message and not set (set, hyper fills a table of that many
/// entries for every response).
const MAX_HEADERS: usize = 100;

/// Probes one node; see the module documentation.
pub struct HealthProbe {
    addr: SocketAddr,
    /// `Host` header value, built once.
    host: HeaderValue,
    tls: Option<Arc<NodeTls>>,
    max_body: usize,
    /// The connection kept from the last probe, if it can be reused.
    kept: Option<Stream>,
}

impl HealthProbe {
    pub(crate) fn new(
        addr: SocketAddr,
        host: &str,
        tls: Option<Arc<NodeTls>>,
        max_body: usize,
    ) -> HealthProbe {
        // A host from an address or a checked server name is a valid value.
        let host = HeaderValue::try_from(host).unwrap_or_else(|_| HeaderValue::from_static(""));
        HealthProbe {
            addr,
            host,
            tls,
            max_body,
            kept: None,
        }
    }

    /// One probe: the status of `GET /`, its body read and dropped. The whole
    /// of it (connect, TLS handshake, request, response) is bounded by
    /// `timeout`; a body above the probe's `max_body` is an error. After an
    /// error the connection is closed; the next probe opens a new one.
    pub async fn probe(&mut self, timeout: Duration) -> Result<StatusCode, FetchError> {
        // Boxed with its timer: the exchange's state (hyper's connection
        // among it, 2 KiB) and the timer's entry live only while the probe
        // runs, not in the prober's task between probes.
        match Box::pin(tokio::time::timeout(timeout, self.exchange())).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                self.kept = None;
                Err(e)
            }
            Err(_) => {
                self.kept = None;
                Err(FetchError::Timeout(timeout))
            }
        }
    }

    /// Resolves when the kept connection has something to read between
    /// probes: the node closed or reset it (its process may have died), or
    /// sent what nobody asked for. Never without a kept connection.
    pub async fn closed(&self) {
        poll_fn(|cx| match &self.kept {
            Some(stream) => stream.poll_readable(cx),
            None => Poll::Pending,
        })
        .await
    }

    /// Whether a connection is kept for the next probe.
    pub fn has_kept_connection(&self) -> bool {
        self.kept.is_some()
    }

    /// Whether this probe speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    async fn exchange(&mut self) -> Result<StatusCode, FetchError> {
        if let Some(mut stream) = self.kept.take() {
            if is_idle_and_open(&mut stream) {
                match self.exchange_on(stream).await {
                    Ok((status, kept)) => {
                        self.kept = kept;
                        return Ok(status);
                    }
                    // Open when checked, closed under the request: sent
                    // once more on a new connection, below.
                    Err(Failure::ClosedBeforeResponse(_)) => {}
                    Err(Failure::Fetch(e)) => return Err(e),
                }
            }
        }
        let stream = connect(self.addr, self.tls.as_deref()).await?;
        match self.exchange_on(stream).await {
            Ok((status, kept)) => {
                self.kept = kept;
                Ok(status)
            }
            Err(Failure::ClosedBeforeResponse(detail)) => Err(FetchError::Closed(detail)),
            Err(Failure::Fetch(e)) => Err(e),
        }
    }

    /// One request and its response on `stream`, through hyper's HTTP/1
    /// connection made on it for this probe; the stream is given back when
    /// hyper would carry another request on it.
    async fn exchange_on(&self, stream: Stream) -> Result<(StatusCode, Option<Stream>), Failure> {
        let (mut sender, conn) = http1::Builder::new()
            // `Host`, as the node's logs and the tests expect to read it.
            .title_case_headers(true)
            .read_buf_exact_size(Some(HEAD_BUFFER_BYTES))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Fetch(FetchError::Connect(error_chain(&e))))?;
        let mut conn = Driven { conn, ended: false };
        let exchanged = conn.run(self.request_and_body(&mut sender)).await;
        match exchanged.unwrap_or(Err(Failed::Ended)) {
            Ok(done) => {
                // hyper still waiting for a request: the connection is
                // reusable (framed, kept alive, nothing unasked after it).
                let reusable = done.reusable && conn.poll_once();
                drop(sender);
                Ok((done.status, reusable.then(|| conn.release()).flatten()))
            }
            Err(Failed::Fetch(e)) => Err(Failure::Fetch(e)),
            // hyper says the same of a connection closed before the response
            // and of one closed inside its head; the stream tells them apart.
            Err(closed @ (Failed::Closed(_) | Failed::Ended)) => {
                match conn.into_stream().read_since_write() {
                    false => Err(Failure::ClosedBeforeResponse(match closed {
                        Failed::Closed(e) => format!("connection closed before the response ({e})"),
                        _ => "connection closed before the response".into(),
                    })),
                    true => Err(Failure::Fetch(FetchError::Closed(
                        "connection closed inside the response head".into(),
                    ))),
                }
            }
        }
    }

    /// Sends `GET /` and reads the response to the end of its body.
    async fn request_and_body(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
    ) -> Result<Exchanged, Failed> {
        // No `ready()` first: a new connection takes its first request at
        // once, and waiting for hyper to say so costs a poll of the task.
        let mut request = Request::new(Empty::new());
        request.headers_mut().insert(HOST, self.host.clone());
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.request_failure(e))?;
        let status = response.status();
        let reusable = !has_both_framings(&response);
        let body = response.into_body();
        // The `Content-Length` as hyper read it (none when chunked): above
        // the limit, refused unread.
        if body.size_hint().lower() > self.max_body as u64 {
            return Err(Failed::Fetch(FetchError::TooLarge(self.max_body)));
        }
        self.skip_body(body).await?;
        Ok(Exchanged { status, reusable })
    }

    /// Reads the body to its end and drops it, refusing it as soon as it
    /// exceeds `max_body`.
    async fn skip_body(&self, mut body: Incoming) -> Result<(), Failed> {
        let mut total = 0usize;
        // Not past the end of a `Content-Length` body: no poll for the end.
        while !body.is_end_stream() {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| Failed::Fetch(self.body_failure(&e)))?;
            if let Some(data) = frame.data_ref() {
                total = total.saturating_add(data.len());
                if total > self.max_body {
                    return Err(Failed::Fetch(FetchError::TooLarge(self.max_body)));
                }
            }
        }
        Ok(())
    }

    /// A failure of the request or of reading the response head, in words.
    fn request_failure(&self, e: hyper::Error) -> Failed {
        if let Some(failure) = self.tls_failure(&e) {
            return Failed::Fetch(failure);
        }
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || is_closed_io(&e) {
            return Failed::Closed(e);
        }
        Failed::Fetch(FetchError::Request(if e.is_parse_too_large() {
            format!(
                "response head larger than {HEAD_BUFFER_BYTES} bytes, or with more than \
                 {MAX_HEADERS} header fields"
            )
        } else if e.is_parse() || e.is_parse_status() {
            format!("not an HTTP/1 response: {}", error_chain(&e))
        } else {
            error_chain(&e)
        }))
    }

    /// A failure while reading the body, in words.
    fn body_failure(&self, e: &hyper::Error) -> FetchError {
        if let Some(failure) = self.tls_failure(e) {
            return failure;
        }
        let eof = io_error(e).is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        if eof || e.is_incomplete_message() {
            return FetchError::Closed("connection closed inside the body".into());
        }
        FetchError::Body(error_chain(e))
    }

    /// The TLS failure behind `e`, in words (a refused client certificate
    /// shows only once the request is sent, under TLS 1.3).
    fn tls_failure(&self, e: &hyper::Error) -> Option<FetchError> {
        self.tls.as_ref()?.context.failure(self.addr, e)
    }
}

/// Whether a kept connection can carry the next request: nothing to read on
/// it (no unasked response, no end of stream, no error). Polls it once,
/// without waiting.
fn is_idle_and_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(stream).poll_read(&mut cx, &mut buf).is_pending()
}

/// hyper's side of one probe's connection, polled by the probe itself:
/// without a task of its own, and without shutting the stream down, which
/// may be kept for the next probe.
struct Driven {
    conn: Connection<TokioIo<Stream>, Empty<Bytes>>,
    /// hyper is done with the connection (closed, failed, or not to be kept
    /// alive); it is not polled again.
    ended: bool,
}

impl Driven {
    /// Runs `work` while driving the connection, which does the reading and
    /// writing `work` waits on; None when hyper ended the connection while
    /// `work` still waited for it. Each time the task is woken: `work` (its
    /// first poll queues the request), the connection (writes it, or reads
    /// the response), then `work` again (takes what was just read).
    async fn run<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if !self.ended {
                self.ended = self.conn.poll_without_shutdown(cx).is_ready();
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Some(out));
                }
            }
            // Once hyper is done with the connection (closed, failed, or
            // done after its last response), what `work` still waits for
            // will never come.
            match self.ended {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        })
        .await
    }

    /// Polls the connection once without waiting; whether it goes on.
    fn poll_once(&mut self) -> bool {
        if !self.ended {
            let mut cx = Context::from_waker(Waker::noop());
            self.ended = self.conn.poll_without_shutdown(&mut cx).is_ready();
        }
        !self.ended
    }

    /// The stream for the next probe, once the request sender is dropped:
    /// hyper then ends its side at once, and has read nothing unasked.
    fn release(mut self) -> Option<Stream> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.conn.poll_without_shutdown(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) | Poll::Pending => return None,
        }
        let parts = self.conn.into_parts();
        parts.read_buf.is_empty().then(|| parts.io.into_inner())
    }

    /// The stream, taken back from hyper, to look at.
    fn into_stream(self) -> Stream {
        self.conn.into_parts().io.into_inner()
    }
}

/// What one exchange ended with.
struct Exchanged {
    status: StatusCode,
    /// Not a response that carries both framings.
    reusable: bool,
}

enum Failure {
    /// The connection was closed (or reset) before any byte of a response:
    /// on a kept connection, the node closed it while idle.
    ClosedBeforeResponse(String),
    Fetch(FetchError),
}

/// How an exchange failed, before telling whether a closed connection had
/// begun to answer.
enum Failed {
    Closed(hyper::Error),
    /// hyper ended the connection while the exchange still waited (a node
    /// that closed it at once, before the request was even queued).
    Ended,
    Fetch(FetchError),
}

/// A response with both `Transfer-Encoding` and `Content-Length` may be an
/// attempt at smuggling (RFC 9112 section 6.1): hyper reads it by
/// `Transfer-Encoding`; its connection is not trusted further.
fn has_both_framings(response: &Response<Incoming>) -> bool {
    let headers = response.headers();
    headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH)
}

/// The I/O error behind a hyper error, if that is what it is.
fn io_error(e: &hyper::Error) -> Option<&std::io::Error> {
    std::error::Error::source(e)?.downcast_ref::<std::io::Error>()
}

/// Whether `e` is an I/O error that means the peer closed the connection.
fn is_closed_io(e: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    io_error(e).is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::NotConnected
        )
    })
}

#[cfg(test)]
mod tests;
