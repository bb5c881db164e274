//! The tests' one DNS client: queries to one server over UDP (with retries)
//! and TCP (one connection, pipelined when given several), from a chosen
//! source address, every wait bounded; and raw sends and reads for the tests
//! that send malformed bytes on purpose.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use domain::base::iana::{Class, Rtype};
use domain::base::{MessageBuilder, Name};

use super::Reply;

/// How long one UDP attempt waits for its reply.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(1);

/// UDP attempts per query.
pub const UDP_TRIES: usize = 3;

/// How long a TCP connect, and each write and read, may take.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// A DNS query for `name`/`qtype` in class IN, with RD set.
pub fn build_query(id: u16, name: &str, qtype: Rtype) -> Vec<u8> {
    let mut builder = MessageBuilder::new_vec();
    builder.header_mut().set_id(id);
    builder.header_mut().set_rd(true);
    let mut question = builder.question();
    question
        .push((
            Name::<Vec<u8>>::vec_from_str(name).expect("a valid test name"),
            qtype,
            Class::IN,
        ))
        .expect("a question fits");
    question.finish()
}

/// A client of one server: a UDP socket bound to the source address and
/// connected to the server (so ICMP errors end a wait early), and the
/// server's TCP address, each connection bound to the same source.
pub struct DnsClient {
    udp: UdpSocket,
    /// Where TCP connections are bound; `None`: the kernel's choice.
    tcp_source: Option<IpAddr>,
    tcp_server: SocketAddr,
    next_id: u16,
    timeout: Duration,
    tries: usize,
}

impl DnsClient {
    /// A client on loopback (127.0.0.1 or ::1, as `server`) of `server`,
    /// for UDP and TCP on that one address.
    pub fn new(server: SocketAddr) -> DnsClient {
        let source = match server {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        DnsClient {
            tcp_source: None,
            ..DnsClient::from(source, server)
        }
    }

    /// A client sending from `source` (a loopback address of the test's
    /// own; the port is the kernel's choice) to `server`.
    pub fn from(source: IpAddr, server: SocketAddr) -> DnsClient {
        let udp = UdpSocket::bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("bind a UDP client on {source}: {e}"));
        udp.connect(server).expect("connect the UDP client");
        DnsClient {
            udp,
            tcp_source: Some(source),
            tcp_server: server,
            next_id: 1,
            timeout: UDP_TIMEOUT,
            tries: UDP_TRIES,
        }
    }

    /// Sends TCP queries to `tcp` rather than to the UDP address.
    pub fn with_tcp(mut self, tcp: SocketAddr) -> DnsClient {
        self.tcp_server = tcp;
        self
    }

    /// Sets the UDP socket's kernel buffers to `bytes` each way, so that a
    /// flood's replies are not dropped on the test's side.
    pub fn with_buffers(self, bytes: usize) -> DnsClient {
        let socket = socket2::SockRef::from(&self.udp);
        let _ = socket.set_recv_buffer_size(bytes);
        let _ = socket.set_send_buffer_size(bytes);
        self
    }

    /// Waits `timeout` for each UDP attempt, and makes `tries` of them.
    pub fn with_timeout(mut self, timeout: Duration, tries: usize) -> DnsClient {
        self.timeout = timeout;
        self.tries = tries;
        self
    }

    /// The UDP socket's own address.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("a bound socket")
    }

    /// The UDP socket itself, for floods that send and read without
    /// waiting for each reply.
    pub fn socket(&self) -> &UdpSocket {
        &self.udp
    }

    fn next_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Asks `name`/`qtype` over UDP (see [`DnsClient::exchange`]).
    pub fn query(&mut self, name: &str, qtype: Rtype) -> Option<Reply> {
        let id = self.next_id();
        self.exchange(&build_query(id, name, qtype))
    }

    /// Asks `name`/`qtype` over UDP once, waiting up to `timeout`: for the
    /// tests that count what the server saw, where a retry would count twice.
    pub fn query_once(&mut self, name: &str, qtype: Rtype, timeout: Duration) -> Option<Reply> {
        let id = self.next_id();
        self.exchange_once(&build_query(id, name, qtype), timeout)
    }

    /// The A records for `name`; empty if there was no reply.
    pub fn a(&mut self, name: &str) -> Vec<IpAddr> {
        self.query(name, Rtype::A)
            .map(|r| r.addrs())
            .unwrap_or_default()
    }

    /// Sends `query` over UDP up to the set number of tries, each waiting the
    /// set timeout for the reply with the query's ID; other datagrams (late
    /// replies) are skipped.
    pub fn exchange(&self, query: &[u8]) -> Option<Reply> {
        (0..self.tries).find_map(|_| self.exchange_once(query, self.timeout))
    }

    /// Sends `query` over UDP once and waits up to `timeout` for the reply
    /// with its ID.
    pub fn exchange_once(&self, query: &[u8], timeout: Duration) -> Option<Reply> {
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        self.udp.send(query).ok()?;
        let deadline = Instant::now() + timeout;
        while let Some(bytes) = self.recv_until(deadline) {
            if let Some(reply) = Reply::parse(bytes) {
                if reply.id() == id {
                    return Some(reply);
                }
            }
        }
        None
    }

    /// Sends raw bytes over UDP (errors ignored: hostile packets may be
    /// refused).
    pub fn send_raw(&self, bytes: &[u8]) {
        let _ = self.udp.send(bytes);
    }

    /// The next datagram received within `timeout`, if any.
    pub fn recv_raw(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.recv_until(Instant::now() + timeout)
    }

    /// Every reply that arrives within `wait` (datagrams that do not parse
    /// are skipped).
    pub fn replies_within(&self, wait: Duration) -> Vec<Reply> {
        let deadline = Instant::now() + wait;
        std::iter::from_fn(|| self.recv_until(deadline))
            .filter_map(Reply::parse)
            .collect()
    }

    fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.udp
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.udp.recv(&mut buf) {
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Timeout, or ICMP unreachable reported on the connected socket.
                Err(_) => return None,
            }
        }
    }

    /// Asks `name`/`qtype` over a new TCP connection.
    pub fn query_tcp(&mut self, name: &str, qtype: Rtype) -> Option<Reply> {
        let id = self.next_id();
        self.exchange_tcp(&[build_query(id, name, qtype)])?.pop()
    }

    /// Sends every query on one new TCP connection at once (pipelined), then
    /// reads one reply per query, in order. `None` if the connection fails
    /// or a reply does not arrive within [`TCP_TIMEOUT`].
    pub fn exchange_tcp(&self, queries: &[Vec<u8>]) -> Option<Vec<Reply>> {
        let mut stream = self.connect_tcp().ok()?;
        let mut framed = Vec::new();
        for query in queries {
            let len = u16::try_from(query.len()).expect("a query fits in a TCP frame");
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(query);
        }
        stream.write_all(&framed).ok()?;
        let mut replies = Vec::with_capacity(queries.len());
        for _ in queries {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).ok()?;
            let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut bytes).ok()?;
            replies.push(Reply::parse(bytes)?);
        }
        Some(replies)
    }

    /// A TCP connection from the source address to the server, with
    /// [`TCP_TIMEOUT`] on the connect and on every read and write: for the
    /// tests that misbehave on purpose (half messages, idle connections).
    pub fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let stream = match self.tcp_source {
            // Not bound before connecting, so that a test opening thousands
            // of connections never runs out of ports for binding.
            None => TcpStream::connect_timeout(&self.tcp_server, TCP_TIMEOUT)?,
            Some(source) => {
                let domain = Domain::for_address(self.tcp_server);
                let socket = Socket::new(domain, Type::STREAM, None)?;
                socket.bind(&SocketAddr::new(source, 0).into())?;
                socket.connect_timeout(&self.tcp_server.into(), TCP_TIMEOUT)?;
                socket.into()
            }
        };
        stream.set_read_timeout(Some(TCP_TIMEOUT))?;
        stream.set_write_timeout(Some(TCP_TIMEOUT))?;
        Ok(stream)
    }
}
