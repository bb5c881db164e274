//! systemd's `sd_notify` protocol, without libsystemd.
//!
//! Under a `Type=notify` unit, systemd passes the path of a datagram socket
//! in `NOTIFY_SOCKET` (a filesystem path, or `@name` for the abstract
//! namespace) and waits for the service to send `READY=1` there before it
//! counts the start as done. Each message is one datagram of
//! newline-separated `KEY=value` assignments (see `sd_notify(3)`); systemd
//! attributes it to the sender through the kernel's `SCM_CREDENTIALS`, so
//! any thread of the main process may send.
//!
//! With `WatchdogSec=` set, systemd also passes `WATCHDOG_USEC` (and
//! `WATCHDOG_PID`) and kills the service unless it sends `WATCHDOG=1` at
//! least that often; [`Notifier::watchdog_interval`] gives half of it, the
//! customary ping period, and [`watchdog_loop`] pings on the control plane
//! for as long as a health check passes.
//!
//! Typical use by the server:
//!
//! ```no_run
//! # use alternator_dns::notify::Notifier;
//! let notifier = Notifier::from_env(); // None when not under systemd
//! // ... bind sockets, start workers, first snapshot ...
//! if let Some(n) = &notifier {
//!     let _ = n.ready("serving alternator.example.com, 3 live nodes");
//! }
//! // on SIGHUP: n.reloading(), reload, n.ready("reloaded")
//! // on SIGTERM: n.stopping(), shut down
//! ```
//!
//! Errors while sending are returned and are not fatal: the caller logs them.
//! `NOTIFY_SOCKET` is left in the environment (it only matters to child
//! processes, and this server starts none).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Where messages go, as given, for error messages.
    target: OsString,
    /// The full `WATCHDOG_USEC` period, when it is ours.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asks for through the environment, or `None` when
    /// `NOTIFY_SOCKET` is unset (not started by systemd, or not
    /// `Type=notify`). A `NOTIFY_SOCKET` that cannot be used is logged as a
    /// warning and also gives `None`.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        match Notifier::from_values(&socket, usec.as_deref(), pid.as_deref()) {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(
                    notify_socket = %socket.to_string_lossy(),
                    error = %e,
                    "cannot use NOTIFY_SOCKET; systemd will not be told of readiness"
                );
                None
            }
        }
    }

    /// The notifier for these values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
    /// `WATCHDOG_PID` (what [`Notifier::from_env`] reads; for tests and for
    /// callers that already hold them). The watchdog applies when
    /// `WATCHDOG_USEC` is a positive number and `WATCHDOG_PID` is unset or
    /// is this process's pid; otherwise it is silently off, as in
    /// `sd_watchdog_enabled(3)`.
    pub fn from_values(
        notify_socket: &OsStr,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
    ) -> io::Result<Notifier> {
        let addr = parse_address(notify_socket)?;
        let socket = UnixDatagram::unbound()?;
        let watchdog = watchdog_period(watchdog_usec, watchdog_pid, std::process::id());
        Ok(Notifier {
            socket,
            addr,
            target: notify_socket.to_os_string(),
            watchdog,
        })
    }

    /// Sends `msg` as one datagram, exactly as given (newline-separated
    /// `KEY=value` assignments).
    pub fn notify(&self, msg: &str) -> io::Result<()> {
        let sent = self
            .socket
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("sd_notify to {}: {e}", self.target.to_string_lossy()),
                )
            })?;
        if sent != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "sd_notify to {}: sent {sent} of {} bytes",
                    self.target.to_string_lossy(),
                    msg.len()
                ),
            ));
        }
        Ok(())
    }

    /// Start-up (or a reload) is complete: `READY=1` and a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// A free-form status line, shown by `systemctl status`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", one_line(text)))
    }

    /// Shutting down: `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// Reloading the configuration: `RELOADING=1` with `MONOTONIC_USEC`
    /// (needed by `Type=notify-reload`, systemd 253 and later; harmless
    /// before). Send [`Notifier::ready`] when the reload is done.
    pub fn reloading(&self) -> io::Result<()> {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// Asks systemd to wait this much longer for start-up or shutdown to
    /// finish (`EXTEND_TIMEOUT_USEC`), e.g. while seeds are resolved.
    pub fn extend_timeout(&self, by: Duration) -> io::Result<()> {
        self.notify(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
    }

    /// The watchdog keep-alive ping: `WATCHDOG=1`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// How often to call [`Notifier::watchdog`]: half of `WATCHDOG_USEC`,
    /// or `None` when systemd runs no watchdog for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|period| period / 2)
    }
}

/// Pings the watchdog every [`Notifier::watchdog_interval`] while
/// `healthy()` says so, until `shutdown` becomes `true` (or its sender is
/// dropped). Returns at once when there is no watchdog. When `healthy()` is
/// false the ping is skipped (and logged), so systemd restarts a server
/// that stays stuck for `WatchdogSec`; pass a check that proves progress,
/// e.g. that every worker's heartbeat moved since the last call.
pub async fn watchdog_loop(
    notifier: Arc<Notifier>,
    healthy: impl Fn() -> bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(interval) = notifier.watchdog_interval() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            _ = ticks.tick() => {
                if !healthy() {
                    warn!("health check failed; not pinging the systemd watchdog");
                } else if let Err(e) = notifier.watchdog() {
                    warn!(error = %e, "cannot ping the systemd watchdog");
                }
            }
        }
    }
}

/// Resolves once `shutdown` is `true`, or its sender is gone (which also
/// means stop). Returns `()` so that no `watch::Ref` lives across an await.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// `NOTIFY_SOCKET` as a socket address: an absolute path, or `@name` in the
/// abstract namespace.
fn parse_address(value: &OsStr) -> io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(value),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={:?} is neither an absolute path nor an @abstract name",
                value.to_string_lossy()
            ),
        )),
    }
}

/// The watchdog period, when `WATCHDOG_USEC` is valid and `WATCHDOG_PID`
/// (if set) names `our_pid`.
fn watchdog_period(usec: Option<&OsStr>, pid: Option<&OsStr>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// A status text must not carry newlines: they would start new assignments.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd compares it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A receiving socket bound in a fresh temporary directory, removed on drop.
    struct Receiver {
        socket: UnixDatagram,
        dir: PathBuf,
        path: PathBuf,
    }

    impl Receiver {
        fn bind() -> Receiver {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "alternator-dns-notify-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify.sock");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Receiver { socket, dir, path }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn assert_empty(&self) {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let err = self.socket.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            self.socket.set_nonblocking(false).unwrap();
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn messages_arrive_in_order_and_exactly() {
        let rx = Receiver::bind();
        let n = Notifier::from_values(rx.path.as_os_str(), None, None).unwrap();
        n.ready("serving alternator.example.com").unwrap();
        n.status("3 live nodes\nREADY=0").unwrap();
        n.watchdog().unwrap();
        n.extend_timeout(Duration::from_secs(5)).unwrap();
        n.reloading().unwrap();
        n.stopping().unwrap();
        n.notify("FDSTORE=0\nCUSTOM=x").unwrap();
        assert_eq!(rx.recv(), "READY=1\nSTATUS=serving alternator.example.com");
        assert_eq!(rx.recv(), "STATUS=3 live nodes READY=0");
        assert_eq!(rx.recv(), "WATCHDOG=1");
        assert_eq!(rx.recv(), "EXTEND_TIMEOUT_USEC=5000000");
        let reloading = rx.recv();
        let usec = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{reloading:?}"));
        let usec: u64 = usec.parse().unwrap();
        assert!(usec > 0 && usec <= monotonic_usec());
        assert_eq!(rx.recv(), "STOPPING=1");
        assert_eq!(rx.recv(), "FDSTORE=0\nCUSTOM=x");
        rx.assert_empty();
    }

    #[test]
    fn abstract_namespace_socket() {
        let name = format!(
            "alternator-dns-notify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_values(os(&format!("@{name}")), None, None).unwrap();
        n.ready("up").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn bad_socket_values_are_errors() {
        for bad in ["", "relative/path", "vsock:2:1234"] {
            let err = Notifier::from_values(os(bad), None, None).unwrap_err();
            assert!(
                err.to_string().contains("neither an absolute path"),
                "{bad:?}: {err}"
            );
        }
        // A socket nobody listens on: the send fails, with the path in the error.
        let rx = Receiver::bind();
        let gone = rx.path.clone();
        drop(rx);
        let n = Notifier::from_values(gone.as_os_str(), None, None).unwrap();
        let err = n.ready("x").unwrap_err();
        assert!(err.to_string().contains("notify.sock"), "{err}");
    }

    #[test]
    fn watchdog_interval_is_half_the_period_when_ours() {
        let me = std::process::id();
        let n = |usec: Option<&str>, pid: Option<&str>| {
            Notifier::from_values(os("@x"), usec.map(os), pid.map(os))
                .unwrap()
                .watchdog_interval()
        };
        assert_eq!(n(None, None), None);
        assert_eq!(n(Some("10000000"), None), Some(Duration::from_secs(5)));
        assert_eq!(
            n(Some("10000000"), Some(&me.to_string())),
            Some(Duration::from_secs(5))
        );
        assert_eq!(n(Some("10000000"), Some(&(me + 1).to_string())), None);
        assert_eq!(n(Some("10000000"), Some("garbage")), None);
        assert_eq!(n(Some("0"), None), None);
        assert_eq!(n(Some("-5"), None), None);
        assert_eq!(n(Some("ten"), None), None);
        assert_eq!(
            watchdog_period(Some(os("3")), Some(os("7")), 7),
            Some(Duration::from_micros(3))
        );
    }

    /// Datagrams queued on `rx` now, each checked to be a ping.
    fn pings(rx: &Receiver) -> usize {
        rx.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut pings = 0;
        while let Ok(len) = rx.socket.recv(&mut buf) {
            assert_eq!(&buf[..len], b"WATCHDOG=1");
            pings += 1;
        }
        rx.socket.set_nonblocking(false).unwrap();
        pings
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_loop_pings_every_half_period_while_healthy_and_stops_on_shutdown() {
        use std::sync::atomic::AtomicBool;
        let rx = Receiver::bind();
        // 40 ms period: a ping every 20 ms, the first at once.
        let n =
            Arc::new(Notifier::from_values(rx.path.as_os_str(), Some(os("40000")), None).unwrap());
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn({
            let healthy = healthy.clone();
            watchdog_loop(n, move || healthy.load(Ordering::Relaxed), stop_rx)
        });
        // The paused clock: at 0, 20, 40, 60, 80 and 100 ms.
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert_eq!(pings(&rx), 6);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pings(&rx), 1, "the ping at 120 ms");
        // Unhealthy: no more pings.
        healthy.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pings(&rx), 0);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn watchdog_loop_returns_without_a_watchdog() {
        let n = Arc::new(Notifier::from_values(os("@unused"), None, None).unwrap());
        let (_stop, stop_rx) = watch::channel(false);
        tokio::time::timeout(Duration::from_secs(5), watchdog_loop(n, || true, stop_rx))
            .await
            .expect("returns at once");
    }
}
