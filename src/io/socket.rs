//! Socket setup shared by both backends.
//!
//! Every worker binds its own socket per listen address with `SO_REUSEPORT`,
//! so the kernel hashes each client's flow to one worker and no user-space
//! queue or lock sits between the NIC and the answer path. The receive and
//! send buffers are enlarged because a DNS burst arrives faster than one
//! worker drains it, and a datagram dropped in a full socket buffer is a
//! client timeout.
//!
//! The sockaddr helpers convert between kernel and std addresses without
//! allocating and without trusting lengths the kernel (or a peer) reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::IoError;

/// Socket buffer size asked for; the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`, and a refusal is harmless, so failures are ignored.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Binds one UDP socket with `SO_REUSEPORT` and `SO_REUSEADDR` (blocking mode,
/// close-on-exec). IPv6 sockets are v6-only so `[::]` and `0.0.0.0` can be
/// listed side by side.
pub fn bind_udp_reuseport(addr: SocketAddr) -> Result<UdpSocket, IoError> {
    let bind_err = |source| IoError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_err)?;
    socket.set_reuse_port(true).map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_err)?;
    }
    // Best effort: a smaller buffer only costs drops under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into()).map_err(bind_err)?;
    Ok(socket.into())
}

/// Binds `workers` sockets for every listen address.
///
/// Returns the sockets grouped per worker (outer index = worker, inner = listen
/// order) and the address each listen entry actually got. A listen address
/// with port 0 gets an ephemeral port from its first bind, and every other
/// worker binds that same port, so all workers share one port per address.
pub fn bind_worker_sockets(
    listen: &[SocketAddr],
    workers: usize,
) -> Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>), IoError> {
    if workers == 0 {
        let addr = listen
            .first()
            .copied()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "zero workers");
        return Err(IoError::Bind { addr, source });
    }
    let mut per_worker: Vec<Vec<UdpSocket>> = (0..workers)
        .map(|_| Vec::with_capacity(listen.len()))
        .collect();
    let mut bound = Vec::with_capacity(listen.len());
    for &addr in listen {
        let (sockets, actual) = bind_group(addr, workers)?;
        for (worker, socket) in per_worker.iter_mut().zip(sockets) {
            worker.push(socket);
        }
        bound.push(actual);
    }
    Ok((per_worker, bound))
}

/// Binds `count` `SO_REUSEPORT` sockets to one address.
///
/// For port 0 the port is chosen with a plain socket first: the kernel may
/// give a `SO_REUSEPORT` socket bound to port 0 a port that another
/// `SO_REUSEPORT` group of the same user already holds, and the two groups
/// would then share each other's datagrams. A plain socket's port is free of
/// any socket; it is released and the group bound to it at once, and the
/// whole step is retried if something took the port in between.
fn bind_group(addr: SocketAddr, count: usize) -> Result<(Vec<UdpSocket>, SocketAddr), IoError> {
    if addr.port() != 0 {
        let sockets = (0..count)
            .map(|_| bind_udp_reuseport(addr))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((sockets, addr));
    }
    const ATTEMPTS: usize = 20;
    let mut attempt = 1;
    loop {
        let free = UdpSocket::bind(addr)
            .and_then(|probe| probe.local_addr())
            .map_err(|source| IoError::Bind { addr, source })?;
        match (0..count).map(|_| bind_udp_reuseport(free)).collect() {
            Ok(sockets) => return Ok((sockets, free)),
            Err(IoError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Pins the calling thread to `cpu`; returns false when the OS refused or the
/// CPU does not exist (the worker then simply runs unpinned).
pub fn pin_current_thread(cpu: usize) -> bool {
    // core_affinity indexes a fixed cpu_set_t and would panic past its end.
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Size of the name buffer both backends hand the kernel: large enough for
/// `sockaddr_in6`, which is the largest family a UDP socket reports.
pub(crate) const SOCKADDR_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Reads a kernel `sockaddr_in`/`sockaddr_in6` from raw bytes.
///
/// Returns None for unknown families or short input; never reads past `bytes`.
pub(crate) fn sockaddr_from_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope_id).into())
        }
        _ => None,
    }
}

/// Reads the first `len` bytes of a kernel-filled `sockaddr_storage`.
pub(crate) fn sockaddr_from_storage(st: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    let len = len.min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `st` is a live, initialised sockaddr_storage (plain integer
    // fields, no padding on Linux) and `len` is clamped to its size.
    let bytes = unsafe {
        std::slice::from_raw_parts((st as *const libc::sockaddr_storage).cast::<u8>(), len)
    };
    sockaddr_from_bytes(bytes)
}

/// Writes `addr` as a kernel sockaddr into `out` and returns its length.
pub(crate) fn sockaddr_to_storage(
    addr: &SocketAddr,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let storage: *mut libc::sockaddr_storage = out;
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is valid (plain integers).
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is larger than and at least as aligned
            // as sockaddr_in, and `out` is an exclusive reference.
            unsafe { storage.cast::<libc::sockaddr_in>().write(sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is valid (plain integers).
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: sockaddr_storage is larger than and at least as aligned
            // as sockaddr_in6, and `out` is an exclusive reference.
            unsafe { storage.cast::<libc::sockaddr_in6>().write(sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// A source we must never answer: port 0 cannot be a real client, and
/// replying to it would let a spoofer aim our traffic at arbitrary hosts'
/// port 0. Unspecified addresses are refused for the same reason.
pub(crate) fn is_unanswerable(source: &SocketAddr) -> bool {
    source.port() == 0
        || match source.ip() {
            IpAddr::V4(ip) => ip.is_unspecified(),
            IpAddr::V6(ip) => ip.is_unspecified(),
        }
}

/// Shared helpers for the backend tests: an echo handler and a client.
#[cfg(test)]
pub(crate) mod testutil {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crate::io::{PacketHandler, StopSignal, WorkerSockets};

    /// Echoes the query with its first byte inverted; drops queries starting
    /// with `drop`; counts every call.
    pub(crate) struct Echo {
        pub(crate) seen: Arc<AtomicU64>,
    }

    impl PacketHandler for Echo {
        fn handle(
            &mut self,
            query: &[u8],
            _source: SocketAddr,
            _listener: usize,
            reply: &mut Vec<u8>,
        ) -> bool {
            self.seen.fetch_add(1, Ordering::Relaxed);
            if query.starts_with(b"drop") || query.is_empty() {
                return false;
            }
            reply.extend_from_slice(query);
            reply[0] ^= 0xff;
            true
        }
    }

    pub(crate) fn expected_reply(query: &[u8]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[0] ^= 0xff;
        r
    }

    pub(crate) type RunFn = fn(WorkerSockets, &mut Echo) -> Result<(), crate::io::IoError>;

    /// A worker thread running `run` over freshly bound loopback sockets.
    pub(crate) struct Worker {
        pub(crate) addrs: Vec<SocketAddr>,
        pub(crate) seen: Arc<AtomicU64>,
        pub(crate) shutdown: StopSignal,
        pub(crate) thread: Option<JoinHandle<Result<(), crate::io::IoError>>>,
    }

    impl Worker {
        pub(crate) fn start(run: RunFn, listen: &[SocketAddr]) -> Worker {
            let (mut groups, addrs) = super::bind_worker_sockets(listen, 1).expect("bind");
            let sockets = groups.pop().expect("one worker");
            let seen = Arc::new(AtomicU64::new(0));
            let shutdown = StopSignal::new();
            let ws = WorkerSockets {
                sockets,
                shutdown: shutdown.clone(),
            };
            let mut handler = Echo { seen: seen.clone() };
            let thread = Some(std::thread::spawn(move || run(ws, &mut handler)));
            Worker {
                addrs,
                seen,
                shutdown,
                thread,
            }
        }

        /// Sets the flag and asserts the worker returns Ok within `limit`.
        pub(crate) fn stop_within(&mut self, limit: Duration) {
            let t0 = Instant::now();
            self.shutdown.set();
            let thread = self.thread.take().expect("running");
            while !thread.is_finished() {
                assert!(t0.elapsed() < limit, "worker did not stop within {limit:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
            thread.join().expect("no panic").expect("worker ok");
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            self.shutdown.set();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub(crate) fn client(server: SocketAddr) -> UdpSocket {
        let local: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("literal")
        } else {
            "[::1]:0".parse().expect("literal")
        };
        let c = UdpSocket::bind(local).expect("client bind");
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        c
    }

    /// Sends `n` queries in windows (so the client's own buffer cannot
    /// overflow) and checks every non-`drop` one is answered exactly.
    pub(crate) fn echo_round_trip(server: SocketAddr, n: usize, tag: u8) {
        let c = client(server);
        let query = |i: usize| -> Vec<u8> {
            if i % 7 == 3 {
                format!("drop{i}").into_bytes()
            } else {
                format!("{tag}-q{i:06}").into_bytes()
            }
        };
        let mut expected = std::collections::HashSet::new();
        let mut buf = [0u8; 2048];
        for window in (0..n).collect::<Vec<_>>().chunks(64) {
            for &i in window {
                let q = query(i);
                c.send_to(&q, server).expect("send");
                if !q.starts_with(b"drop") {
                    expected.insert(expected_reply(&q));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while !expected.is_empty() && Instant::now() < deadline {
                let Ok((len, from)) = c.recv_from(&mut buf) else {
                    continue;
                };
                assert_eq!(from, server, "reply from the socket queried");
                assert!(expected.remove(&buf[..len]), "unexpected reply");
            }
            assert!(expected.is_empty(), "{} replies missing", expected.len());
        }
    }

    /// Polls until `seen` reaches `want` or a second passes.
    pub(crate) fn wait_seen(seen: &AtomicU64, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(1);
        while seen.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        seen.load(Ordering::Relaxed)
    }

    /// Runs the shared backend checks; each backend's tests call these.
    pub(crate) fn check_echo_many(run: RunFn) {
        let w = Worker::start(run, &["127.0.0.1:0".parse().expect("literal")]);
        echo_round_trip(w.addrs[0], 2000, 1);
        // 2000 queries; every one reached the handler, dropped or not.
        assert_eq!(wait_seen(&w.seen, 2000), 2000);
    }

    pub(crate) fn check_two_sockets(run: RunFn) {
        let listen: [SocketAddr; 3] = [
            "127.0.0.1:0".parse().expect("literal"),
            "[::1]:0".parse().expect("literal"),
            "127.0.0.1:0".parse().expect("literal"),
        ];
        let w = Worker::start(run, &listen);
        assert_eq!(w.addrs.len(), 3);
        for (i, &addr) in w.addrs.iter().enumerate() {
            echo_round_trip(addr, 300, i as u8);
        }
        assert_eq!(wait_seen(&w.seen, 900), 900);
    }

    pub(crate) fn check_shutdown(run: RunFn) {
        let mut w = Worker::start(run, &["127.0.0.1:0".parse().expect("literal")]);
        echo_round_trip(w.addrs[0], 10, 0);
        w.stop_within(Duration::from_secs(1));
        // Idle worker with several sockets stops too.
        let listen: [SocketAddr; 2] = [
            "127.0.0.1:0".parse().expect("literal"),
            "[::1]:0".parse().expect("literal"),
        ];
        let mut w = Worker::start(run, &listen);
        std::thread::sleep(Duration::from_millis(50));
        w.stop_within(Duration::from_secs(1));
    }

    /// Port-0 sources and empty datagrams are never answered; the worker
    /// keeps serving afterwards.
    pub(crate) fn check_hostile_input(run: RunFn) {
        let w = Worker::start(run, &["127.0.0.1:0".parse().expect("literal")]);
        let c = client(w.addrs[0]);
        c.send_to(b"", w.addrs[0]).expect("send empty");
        let big = vec![7u8; 9000];
        c.send_to(&big, w.addrs[0]).expect("send oversized");
        let mut buf = vec![0u8; 10000];
        let (len, _) = c.recv_from(&mut buf).expect("truncated echo");
        assert_eq!(
            len,
            crate::io::MAX_UDP_QUERY,
            "query truncated to the buffer"
        );
        echo_round_trip(w.addrs[0], 50, 9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_one_port_to_all_workers() {
        let listen: [SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        let (groups, bound) = bind_worker_sockets(&listen, 4).unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(bound.len(), 2);
        assert_ne!(bound[0].port(), 0);
        for sockets in &groups {
            assert_eq!(sockets.len(), 2);
            for (s, want) in sockets.iter().zip(&bound) {
                assert_eq!(s.local_addr().unwrap(), *want);
            }
        }
    }

    #[test]
    fn zero_workers_is_an_error() {
        assert!(bind_worker_sockets(&["127.0.0.1:0".parse().unwrap()], 0).is_err());
    }

    #[test]
    fn sockaddr_round_trip() {
        let addrs: [SocketAddr; 3] = [
            "127.0.0.1:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap(),
            SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0x12345, 3).into(),
        ];
        for addr in addrs {
            // SAFETY: all-zero sockaddr_storage is valid.
            let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = sockaddr_to_storage(&addr, &mut st) as usize;
            assert_eq!(sockaddr_from_storage(&st, len), Some(addr));
            assert_eq!(sockaddr_from_storage(&st, 3), None, "short length");
        }
    }

    #[test]
    fn sockaddr_from_garbage_is_none() {
        assert_eq!(sockaddr_from_bytes(&[]), None);
        assert_eq!(sockaddr_from_bytes(&[2, 0, 0]), None);
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        assert!(sockaddr_from_bytes(&v4[..7]).is_none());
        assert!(sockaddr_from_bytes(&v4).is_some());
        let mut unknown = [0u8; 28];
        unknown[0] = 0x7f;
        assert_eq!(sockaddr_from_bytes(&unknown), None);
    }

    #[test]
    fn port_zero_source_is_unanswerable() {
        assert!(is_unanswerable(&"127.0.0.1:0".parse().unwrap()));
        assert!(is_unanswerable(&"0.0.0.0:53".parse().unwrap()));
        assert!(!is_unanswerable(&"127.0.0.1:53".parse().unwrap()));
    }

    #[test]
    fn pinning_to_cpu_zero_works() {
        let ok = std::thread::spawn(|| pin_current_thread(0)).join().unwrap();
        assert!(ok);
        let bad = std::thread::spawn(|| pin_current_thread(1000))
            .join()
            .unwrap();
        assert!(!bad);
        let huge = std::thread::spawn(|| pin_current_thread(1 << 20))
            .join()
            .unwrap();
        assert!(!huge);
    }
}
