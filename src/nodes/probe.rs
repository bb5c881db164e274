//! The health probe: `GET /` on one node, over a connection kept open from
//! one probe to the next.
//!
//! Why not [`AlternatorClient::get`]: memory. A prober lives as long as its
//! node is listed and keeps a connection to it; through hyper's pooled client
//! each such connection cost about 20 KiB (read and write buffers, the pool's
//! entry, the connection task), 20 MiB for a thousand nodes, twice the rest
//! of the server. A [`HealthProbe`] owns its stream and one fixed buffer,
//! allocates nothing per probe of a healthy node, and reads exactly the
//! HTTP/1.1 a probe needs: the status, then the body skipped by its framing
//! (`Content-Length`, chunked, or up to the end of the connection).
//!
//! It opens connections like the client does (same TLS configuration, server
//! name and `Host` header). A kept connection that the node closed while idle
//! (or wrote to unasked, such as a `408` before closing) is dropped before it
//! is used; one that turns out closed only once the request is written is
//! replaced, once, within the same probe: `GET /` is safe to send again.
//!
//! [`AlternatorClient::get`]: super::client::AlternatorClient::get

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::StatusCode;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::{error_chain, FetchError};
use super::tls_failure::TlsContext;

/// The probe's buffer: the whole response head must fit (Alternator's is
/// about 150 bytes, leaving room for what a proxy in front may add); bodies
/// pass through it in pieces of this size.
pub const HEAD_BUFFER_BYTES: usize = 4096;

/// Most header fields read in a response head (as hyper).
const MAX_HEADERS: usize = 100;

/// Most interim (1xx) responses accepted before the real one.
const MAX_INTERIM_RESPONSES: usize = 8;

/// Bytes read after the head beyond the body limit, for chunk-size lines,
/// chunk extensions and trailer fields; more is refused like a large body.
const FRAMING_ALLOWANCE: u64 = 16 * 1024;

/// How a probe opens TLS connections: the client's connector and, when one
/// is configured, the one server name every node is verified against.
#[derive(Clone)]
pub(crate) struct ProbeTls {
    pub connector: TlsConnector,
    pub server_name: Option<ServerName<'static>>,
    /// What TLS failure messages name.
    pub context: Arc<TlsContext>,
}

/// Probes one node; see the module documentation.
pub struct HealthProbe {
    addr: SocketAddr,
    /// `GET / HTTP/1.1` with its `Host`, built once.
    request: Box<[u8]>,
    tls: Option<ProbeTls>,
    max_body: usize,
    /// The connection kept from the last probe, if it can be reused.
    kept: Option<Stream>,
    buf: Box<[u8]>,
}

impl HealthProbe {
    pub(crate) fn new(
        addr: SocketAddr,
        host: &str,
        tls: Option<ProbeTls>,
        max_body: usize,
    ) -> HealthProbe {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        HealthProbe {
            addr,
            request: request.into_bytes().into_boxed_slice(),
            tls,
            max_body,
            kept: None,
            buf: vec![0; HEAD_BUFFER_BYTES].into_boxed_slice(),
        }
    }

    /// One probe: the status of `GET /`, its body read and dropped. The whole
    /// of it (connect, TLS handshake, request, response) is bounded by
    /// `timeout`; a body above the probe's `max_body` is an error. After an
    /// error the connection is closed; the next probe opens a new one.
    pub async fn probe(&mut self, timeout: Duration) -> Result<StatusCode, FetchError> {
        match tokio::time::timeout(timeout, self.exchange()).await {
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

    /// Whether a connection is kept for the next probe.
    pub fn has_kept_connection(&self) -> bool {
        self.kept.is_some()
    }

    async fn exchange(&mut self) -> Result<StatusCode, FetchError> {
        if let Some(mut stream) = self.kept.take() {
            if is_idle_and_open(&mut stream) {
                match self.exchange_over(&mut stream).await {
                    Ok(done) => return Ok(self.keep_if(stream, done)),
                    // Open when checked, closed under the request: sent
                    // once more on a new connection, below.
                    Err(Failure::ClosedBeforeResponse(_)) => {}
                    Err(Failure::Fetch(e)) => return Err(e),
                }
            }
        }
        let mut stream = self.connect().await?;
        match self.exchange_over(&mut stream).await {
            Ok(done) => Ok(self.keep_if(stream, done)),
            Err(Failure::ClosedBeforeResponse(detail)) => Err(FetchError::Request(detail)),
            Err(Failure::Fetch(e)) => Err(e),
        }
    }

    /// One request and its response on `stream`.
    async fn exchange_over(&mut self, stream: &mut Stream) -> Result<Exchanged, Failure> {
        let tls = self.tls.as_ref().map(|t| (&*t.context, self.addr));
        exchange_on(stream, &self.request, &mut self.buf, self.max_body, tls).await
    }

    /// Whether this probe speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn keep_if(&mut self, stream: Stream, done: Exchanged) -> StatusCode {
        if done.reusable {
            self.kept = Some(stream);
        }
        done.status
    }

    async fn connect(&self) -> Result<Stream, FetchError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| FetchError::Connect(format!("tcp connect error: {e}")))?;
        // The request goes out in one write; Nagle would only delay it.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(self.addr.ip().into()),
        };
        let stream = tls.connector.connect(name, tcp).await.map_err(|e| {
            tls.context
                .io_failure(self.addr, &e)
                .unwrap_or_else(|| FetchError::Connect(error_chain(&e)))
        })?;
        Ok(Stream::Tls(Box::new(stream)))
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

/// What one exchange ended with.
struct Exchanged {
    status: StatusCode,
    /// HTTP/1.1, no `Connection: close`, body framed and read to its end,
    /// nothing after it.
    reusable: bool,
}

enum Failure {
    /// The connection was closed (or reset) before any byte of a response:
    /// on a kept connection, the node closed it while idle.
    ClosedBeforeResponse(String),
    Fetch(FetchError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Failure {
        Failure::Fetch(e)
    }
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Neither: the body is the rest of the connection.
    UntilClose,
}

/// The parts of a response head that matter here.
#[derive(Debug, Clone, Copy)]
struct Head {
    len: usize,
    code: u16,
    /// HTTP/1.1, no `Connection: close`, unambiguous framing.
    keep_alive: bool,
    framing: Framing,
}

/// Sends the request on `stream` and reads the response: its head into
/// `buf`, then the body, dropped.
async fn exchange_on(
    stream: &mut Stream,
    request: &[u8],
    buf: &mut [u8],
    max_body: usize,
    tls: Option<(&TlsContext, SocketAddr)>,
) -> Result<Exchanged, Failure> {
    let sent = async {
        stream.write_all(request).await?;
        stream.flush().await
    };
    if let Err(e) = sent.await {
        if let Some(failure) = tls_failure(tls, &e) {
            return Err(failure.into());
        }
        return Err(if is_closed(&e) {
            Failure::ClosedBeforeResponse(format!("connection closed: {e}"))
        } else {
            Failure::Fetch(FetchError::Request(format!("sending the request: {e}")))
        });
    }
    let mut reader = Reader {
        stream,
        buf,
        start: 0,
        end: 0,
        read: 0,
        limit: 0,
        max_body,
        tls,
    };
    let mut interim = 0;
    let head = loop {
        let head = read_head(&mut reader).await?;
        reader.start += head.len;
        // Interim responses (100 Continue, 103 Early Hints) come before the
        // real one.
        if (100..200).contains(&head.code) && head.code != 101 {
            interim += 1;
            if interim > MAX_INTERIM_RESPONSES {
                return Err(FetchError::Request(format!(
                    "more than {MAX_INTERIM_RESPONSES} interim responses"
                ))
                .into());
            }
            continue;
        }
        break head;
    };
    reader.limit = reader.read + max_body as u64 + FRAMING_ALLOWANCE;
    let status = StatusCode::from_u16(head.code)
        .map_err(|_| FetchError::Request(format!("invalid status code {}", head.code)))?;
    // No body whatever the headers say (RFC 9112 section 6.3).
    let framing = match head.code {
        101 | 204 | 304 => Framing::Length(0),
        _ => head.framing,
    };
    match framing {
        Framing::Length(len) => {
            if len > max_body as u64 {
                return Err(FetchError::TooLarge(max_body).into());
            }
            reader.skip(len).await?;
        }
        Framing::Chunked => reader.skip_chunked(max_body).await?,
        Framing::UntilClose => reader.skip_to_end(max_body).await?,
    }
    let reusable = head.keep_alive
        && head.code != 101
        && framing != Framing::UntilClose
        && reader.start == reader.end;
    Ok(Exchanged { status, reusable })
}

/// Reads until `reader`'s window starts with a whole response head.
async fn read_head(reader: &mut Reader<'_>) -> Result<Head, Failure> {
    loop {
        if reader.start < reader.end {
            if let Some(head) = parse_head(&reader.buf[reader.start..reader.end])? {
                return Ok(head);
            }
            if reader.start == 0 && reader.end == reader.buf.len() {
                return Err(FetchError::Request(format!(
                    "response head larger than {} bytes",
                    reader.buf.len()
                ))
                .into());
            }
        }
        let nothing_yet = reader.read == 0;
        match reader.more().await {
            Ok(0) if nothing_yet => {
                return Err(Failure::ClosedBeforeResponse(
                    "connection closed before the response".into(),
                ))
            }
            Ok(0) => {
                return Err(FetchError::Request(
                    "connection closed inside the response head".into(),
                )
                .into())
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(failure) = tls_failure(reader.tls, &e) {
                    return Err(failure.into());
                }
                if nothing_yet && is_closed(&e) {
                    return Err(Failure::ClosedBeforeResponse(format!(
                        "connection closed: {e}"
                    )));
                }
                return Err(FetchError::Request(format!("reading the response: {e}")).into());
            }
        }
    }
}

/// The head at the start of `bytes`, `None` while incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, FetchError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(FetchError::Request(format!(
                "more than {MAX_HEADERS} header fields in the response"
            )))
        }
        Err(e) => return Err(FetchError::Request(format!("not an HTTP/1 response: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let http11 = response.version == Some(1);
    let mut close = false;
    let mut transfer_coded = false;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    for header in response.headers.iter() {
        let value = header.value;
        if header.name.eq_ignore_ascii_case("connection") {
            close |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked framing applies when chunked is the last coding.
            transfer_coded = true;
            chunked = tokens(value)
                .filter(|t| !t.is_empty())
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = content_length(value)?;
            if length.is_some_and(|l| l != parsed) {
                return Err(FetchError::Request("conflicting Content-Length".into()));
            }
            length = Some(parsed);
        }
    }
    // RFC 9112 section 6.3: Transfer-Encoding wins over Content-Length, and
    // a transfer coding other than chunked runs to the end of the connection.
    let framing = match (transfer_coded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) => Framing::UntilClose,
        (false, _, Some(len)) => Framing::Length(len),
        (false, _, None) => Framing::UntilClose,
    };
    // Both framings at once (or a transfer coding in HTTP/1.0) may be an
    // attempt at smuggling: answer this one, then close (section 6.1).
    let keep_alive = http11 && !close && !(transfer_coded && length.is_some());
    Ok(Some(Head {
        len,
        code,
        keep_alive,
        framing,
    }))
}

/// A `Content-Length` value: digits, or a list of equal ones (RFC 9110
/// section 8.6).
fn content_length(value: &[u8]) -> Result<u64, FetchError> {
    let invalid = || FetchError::Request("invalid Content-Length".into());
    let mut found = None;
    for part in tokens(value) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        let n: u64 = std::str::from_utf8(part)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        if found.is_some_and(|f| f != n) {
            return Err(FetchError::Request("conflicting Content-Length".into()));
        }
        found = Some(n);
    }
    found.ok_or_else(invalid)
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// The TLS failure behind an I/O error on a TLS stream, in words.
fn tls_failure(tls: Option<(&TlsContext, SocketAddr)>, e: &io::Error) -> Option<FetchError> {
    let (context, node) = tls?;
    context.io_failure(node, e)
}

/// Whether a read or write error means the peer closed the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

/// A window `start..end` of bytes read from the stream into `buf`.
struct Reader<'a> {
    stream: &'a mut Stream,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    /// Bytes read from the stream so far.
    read: u64,
    /// Most bytes the body may take `read` to (set once the head is read).
    limit: u64,
    max_body: usize,
    /// Where a TLS failure is put into words (a refused client certificate
    /// shows while reading, under TLS 1.3).
    tls: Option<(&'a TlsContext, SocketAddr)>,
}

impl Reader<'_> {
    /// Reads more after the window (moving the window to the front of the
    /// buffer when it reaches the end); `Ok(0)` at the end of the stream.
    async fn more(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.read += n as u64;
        Ok(n)
    }

    /// `more`, for a body framed by length or chunks: the end of the stream
    /// is an error, and so is reading past the limit (endless chunk
    /// extensions or trailer fields).
    async fn more_body(&mut self) -> Result<(), FetchError> {
        match self.more().await {
            Ok(0) => Err(FetchError::Body("connection closed inside the body".into())),
            Ok(_) if self.read > self.limit => Err(FetchError::TooLarge(self.max_body)),
            Ok(_) => Ok(()),
            Err(e) => Err(FetchError::Body(e.to_string())),
        }
    }

    /// Drops the next `n` bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), FetchError> {
        loop {
            let take = n.min((self.end - self.start) as u64);
            self.start += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.more_body().await?;
        }
    }

    /// Drops a chunked body: chunks, the last (empty) one, trailer fields.
    async fn skip_chunked(&mut self, max_body: usize) -> Result<(), FetchError> {
        let mut total: u64 = 0;
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.more_for_line().await?,
                    Err(_) => return Err(FetchError::Body("invalid chunk size line".into())),
                }
            };
            if size == 0 {
                break;
            }
            total = total.saturating_add(size);
            if total > max_body as u64 {
                return Err(FetchError::TooLarge(max_body));
            }
            self.skip(size).await?;
            self.expect_crlf().await?;
        }
        // Trailer fields, up to an empty line.
        loop {
            let window = &self.buf[self.start..self.end];
            if window.starts_with(b"\r\n") {
                self.start += 2;
                return Ok(());
            }
            match window.windows(2).position(|w| w == b"\r\n") {
                Some(at) => self.start += at + 2,
                None => self.more_for_line().await?,
            }
        }
    }

    /// Reads more for a line that does not fit yet; a line as long as the
    /// buffer is an error.
    async fn more_for_line(&mut self) -> Result<(), FetchError> {
        if self.start == 0 && self.end == self.buf.len() {
            return Err(FetchError::Body(format!(
                "a chunked-body line longer than {} bytes",
                self.buf.len()
            )));
        }
        self.more_body().await
    }

    async fn expect_crlf(&mut self) -> Result<(), FetchError> {
        while self.end - self.start < 2 {
            self.more_for_line().await?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(FetchError::Body("chunk data not followed by CRLF".into()));
        }
        self.start += 2;
        Ok(())
    }

    /// Drops everything up to the end of the stream.
    async fn skip_to_end(&mut self, max_body: usize) -> Result<(), FetchError> {
        let mut total = 0usize;
        loop {
            total += self.end - self.start;
            self.start = self.end;
            if total > max_body {
                return Err(FetchError::TooLarge(max_body));
            }
            match self.more().await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(FetchError::Body(e.to_string())),
            }
        }
    }
}

/// A probe's connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
