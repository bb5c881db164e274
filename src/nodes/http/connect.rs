//! Opening a connection to a node: TCP, then TLS with the configured trust
//! and server name. [`NodeTls`] is built once from the settings; the poller
//! hands its configuration to hyper's connector, the prober opens its own
//! connections with [`connect`], so both verify nodes the same way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::tls::{server_name, tls_config};
use super::{error_chain, ClientError, FetchError, TlsContext, TlsSettings};

/// How connections to nodes are secured: the rustls configuration, the one
/// server name every node is verified against (when configured), and what
/// TLS failure messages name.
#[derive(Clone)]
pub(crate) struct NodeTls {
    pub config: Arc<ClientConfig>,
    connector: TlsConnector,
    pub server_name: Option<ServerName<'static>>,
    pub context: Arc<TlsContext>,
}

impl NodeTls {
    /// Reads and checks every file in `tls`.
    pub fn new(tls: &TlsSettings) -> Result<NodeTls, ClientError> {
        let config = Arc::new(tls_config(tls)?);
        Ok(NodeTls {
            connector: TlsConnector::from(Arc::clone(&config)),
            config,
            server_name: tls.server_name.as_deref().map(server_name).transpose()?,
            context: Arc::new(TlsContext {
                ca_file: tls.ca_file.clone(),
                server_name: tls.server_name.clone(),
                client_cert: tls.client_cert.clone(),
            }),
        })
    }

    /// The TLS failure behind an I/O error with `node`, in words.
    pub fn io_failure(&self, node: SocketAddr, e: &io::Error) -> Option<FetchError> {
        self.context.io_failure(node, e)
    }
}

/// A TCP connection to `node`, with TLS on it when `tls` is given: the
/// node's certificate is verified against the configured server name, or
/// else the node's IP address.
pub(crate) async fn connect(node: SocketAddr, tls: Option<&NodeTls>) -> Result<Stream, FetchError> {
    let tcp = TcpStream::connect(node).await.map_err(|e| {
        let message = format!("tcp connect error: {e}");
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FetchError::Refused(message),
            _ => FetchError::Connect(message),
        }
    })?;
    // A request goes out in one write; Nagle would only delay it.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::new(Inner::Plain(tcp)));
    };
    let name = match &tls.server_name {
        Some(name) => name.clone(),
        None => ServerName::IpAddress(node.ip().into()),
    };
    let stream = tls.connector.connect(name, tcp).await.map_err(|e| {
        tls.io_failure(node, &e)
            .unwrap_or_else(|| FetchError::Connect(error_chain(&e)))
    })?;
    Ok(Stream::new(Inner::Tls(Box::new(stream))))
}

/// A connection to a node, plain or TLS, that remembers whether anything
/// was read since the last write: a connection closed under a request
/// before any byte of the answer came is told apart from one closed in the
/// middle of it.
pub(crate) struct Stream {
    inner: Inner,
    read_since_write: bool,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn new(inner: Inner) -> Stream {
        Stream {
            inner,
            read_since_write: false,
        }
    }

    /// Ready when the connection has something to read (the node closed or
    /// reset it, or sent what nobody asked for), or at once on an error:
    /// between probes, a kept connection becoming readable is news.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let tcp = match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => s.get_ref().0,
        };
        // A peek, not read readiness alone: readiness left over from the
        // last read would wake it with nothing there, and a probe would
        // follow at once. Polled, not awaited (`peek`): the future of a
        // prober waiting between probes stays small.
        let mut byte = [0u8; 1];
        tcp.poll_peek(cx, &mut ReadBuf::new(&mut byte)).map(|_| ())
    }

    /// Whether a byte was read after the last write was tried.
    pub fn read_since_write(&self) -> bool {
        self.read_since_write
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.read_since_write = true;
        }
        polled
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Reset on every try: a write that fails counts as written.
        this.read_since_write = false;
        match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
