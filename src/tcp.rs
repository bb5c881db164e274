//! DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): the same answer path
//! behind a two-byte length prefix.
//!
//! TCP carries little traffic here (clients retry over it after TC=1), so it
//! runs on the control plane's runtime rather than the per-core workers.

use std::sync::Arc;
use std::time::Duration;

use rand_core::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::dns::{respond, Outcome, Rng};
use crate::nodes::SharedSnapshot;

/// A connection with no complete query for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once per listener; further ones wait in the backlog.
pub const MAX_CONNECTIONS: usize = 1024;

const MAX_MESSAGE: usize = u16::MAX as usize;

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    published: SharedSnapshot,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut seeds = Rng::seed_from_u64(crate::nodes::refresher::seed_from_time());
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let published = Arc::clone(&published);
                let rng = Rng::from_rng(&mut seeds);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, published, rng, shutdown).await {
                        debug!(%peer, error = %e, "TCP connection ended");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers queries on one connection, in order, until the client closes,
/// goes idle, or the server shuts down.
async fn connection(
    mut stream: TcpStream,
    published: SharedSnapshot,
    mut rng: Rng,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut query = vec![0u8; MAX_MESSAGE];
    let mut framed = Vec::with_capacity(MAX_MESSAGE + 2);
    let mut reply = Vec::with_capacity(MAX_MESSAGE);
    loop {
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            stream.read_exact(&mut query[..len]).await?;
            Ok::<usize, std::io::Error>(len)
        };
        let len = tokio::select! {
            read = tokio::time::timeout(IDLE_TIMEOUT, read) => match read {
                Ok(Ok(len)) => len,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let snapshot = published.load();
        if let Outcome::Reply(_) =
            respond(&query[..len], MAX_MESSAGE, &snapshot, &mut rng, &mut reply)
        {
            framed.clear();
            framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply);
            stream.write_all(&framed).await?;
        }
    }
}
