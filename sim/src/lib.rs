//! A simulated ScyllaDB Alternator cluster, in-process, for alternator-dns's
//! tests, benchmarks and demo. A crate of its own so that the production
//! binary carries none of it (fault injection such as 100 MB bodies); its
//! binary, `alternator-sim`, runs a cluster from the command line and the demo.
//!
//! [`SimCluster::start`] (or [`SimCluster::start_with`], for datacenters,
//! racks, HTTPS and older Scylla versions) runs one HTTP/1.1 server per node,
//! each on its own loopback address (`127.0.0.1`, `127.0.0.2`, ... or `::1`)
//! and all on the same port, on a dedicated background thread with its own
//! single-threaded tokio runtime. Every node serves what a load balancer sees
//! of Alternator (see `ALTERNATOR.md`):
//!
//! - `GET /localnodes`: `200`, `application/json`, a JSON array with the
//!   addresses of the nodes currently *listed* (one membership shared by the
//!   whole cluster) in the queried node's datacenter, shuffled anew for every
//!   response. `?dc=NAME` lists that datacenter instead, `?rack=NAME` narrows
//!   to one rack (of the dc given, or of the node's own); an empty value means
//!   unset, and an unknown dc or rack gives `[]`. With
//!   [`SimOptions::legacy_ignores_dc_rack`] (Scylla before 2025.1) both
//!   parameters are ignored;
//! - `GET /`: `200`, `text/plain`, `healthy: <Host header>`;
//! - anything else: `404`.
//!
//! With [`SimOptions::tls`] every node speaks HTTPS only (one certificate
//! chain for all nodes, optionally requiring client certificates, as with
//! Alternator's `require_client_auth`).
//!
//! Tests then change the cluster while it runs, from any thread (also from
//! inside another tokio runtime): [`SimCluster::set_listed`] changes the
//! membership seen in `/localnodes` independently of whether the node's HTTP
//! server works, [`SimCluster::set_fault`] makes one node misbehave (see
//! [`Fault`]), [`SimCluster::close_connections`] closes a node's open
//! connections while it goes on serving new ones (as Alternator closes idle
//! keep-alive connections), [`SimCluster::add_node`] / [`SimCluster::add_node_in`] /
//! [`SimCluster::remove_node`] change the set of nodes,
//! [`SimCluster::set_location`] moves a node to another dc or rack, and
//! per-node counters tell which nodes were asked.
//!
//! What it does not model: gossip and its delays (membership changes are
//! instantaneous and every node agrees on them, unless a fault says
//! otherwise), the DynamoDB API itself, and network-level faults other than a
//! closed port, a silent server or a stalled TLS handshake (no packet loss,
//! no blackholed SYNs, no slow reads).

mod server;
pub mod test_pki;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use server::ServerHandle;

/// Body of a `/localnodes` answer under [`Fault::Garbage`].
pub const GARBAGE_BODY: &str = "<html><body>this is not JSON [\"127.0.0.1\"</body></html>";

/// How many host-ID strings [`Fault::HostIds`] adds to `/localnodes`.
pub const HOST_IDS_PER_RESPONSE: usize = 2;

/// How long a control call waits for a node's listener and connections to
/// close before it gives up waiting (and logs a warning).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many fresh ports [`SimCluster::start`] tries with port 0.
const BIND_ATTEMPTS: usize = 8;

/// The datacenter of the nodes started by [`SimCluster::start`] and
/// [`SimCluster::add_node`].
pub const DEFAULT_DC: &str = "dc1";

/// The rack of the nodes started by [`SimCluster::start`] and
/// [`SimCluster::add_node`].
pub const DEFAULT_RACK: &str = "rack1";

/// Body size of a [`Fault::HugeBody`] answer (100 MB, declared in
/// `Content-Length`).
pub const HUGE_BODY_BYTES: u64 = 100_000_000;

/// How many address strings [`Fault::ManyEntries`] lists.
pub const MANY_ENTRIES: usize = 100_000;

/// Size of each chunk of a [`Fault::EndlessChunked`] body.
pub const ENDLESS_CHUNK_BYTES: usize = 4096;

/// Pause before each chunk of a [`Fault::EndlessChunked`] body.
pub const ENDLESS_CHUNK_INTERVAL: Duration = Duration::from_millis(2);

/// How a node's HTTP server behaves. Which faults apply to which requests:
/// `Down`, `Hang`, `Delay`, `Status500`, `Redirect`, `HugeBody` and
/// `EndlessChunked` to every request; `Garbage`, `HostIds`, `EmptyList` and
/// `ManyEntries` only change `/localnodes` (`GET /` still answers normally);
/// `TlsHang` to new connections (requests on connections opened before it
/// hang, as with `Hang`). Requests are counted on arrival whatever the fault;
/// under `TlsHang` no request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal.
    #[default]
    None,
    /// Refuse connections (stop listening) and close open connections.
    Down,
    /// Accept, read the request, never answer.
    Hang,
    /// Answer normally after the delay.
    Delay(Duration),
    /// `500` with a text body.
    Status500,
    /// `200` with a body that is not JSON ([`GARBAGE_BODY`]), on `/localnodes`.
    Garbage,
    /// `/localnodes` includes host-ID UUID strings (see [`SimCluster::host_ids`])
    /// besides the listed addresses.
    HostIds,
    /// `/localnodes` answers `[]`.
    EmptyList,
    /// Accept TCP connections and never answer on them: the TLS handshake
    /// never completes (on plain HTTP, the request is never answered), like a
    /// node stuck mid-handshake. What the client sends is read and discarded;
    /// the connection stays open until the client closes it (or `Down`).
    TlsHang,
    /// `302 Found` with `Location` pointing at the same URL on the same node
    /// (a redirect loop).
    Redirect,
    /// `200`, `application/json`, with a body of [`HUGE_BODY_BYTES`] declared
    /// in `Content-Length` and streamed in 64 KiB chunks (never held in
    /// memory whole): `["127.0.0.1","127.0.0.1",...` that never closes.
    HugeBody,
    /// `/localnodes` answers a JSON array of [`MANY_ENTRIES`] distinct IPv4
    /// addresses (`10.0.0.1`, `10.0.0.2`, ..., about 1.5 MB) instead of the
    /// listed nodes.
    ManyEntries,
    /// `200`, `application/json`, with a chunked body that never ends: a chunk
    /// of [`ENDLESS_CHUNK_BYTES`] every [`ENDLESS_CHUNK_INTERVAL`], until the
    /// client goes away (or `Down`).
    EndlessChunked,
}

/// One node of a cluster started by [`SimCluster::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNode {
    pub addr: IpAddr,
    pub dc: String,
    pub rack: String,
}

impl SimNode {
    pub fn new(addr: IpAddr, dc: impl Into<String>, rack: impl Into<String>) -> SimNode {
        SimNode {
            addr,
            dc: dc.into(),
            rack: rack.into(),
        }
    }
}

/// HTTPS for every node of a cluster, as PEM text.
#[derive(Clone)]
pub struct SimTls {
    /// The server certificate chain, leaf first; the same for every node, so
    /// it needs every node's IP address (or a DNS name the client verifies
    /// against instead) as subject alternative names.
    pub cert_chain_pem: String,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (Alternator's `require_client_auth`); the handshake fails
    /// otherwise.
    pub client_ca_pem: Option<String>,
}

impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTls")
            .field("client_auth", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Cluster-wide options of [`SimCluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Serve HTTPS (only) instead of HTTP.
    pub tls: Option<SimTls>,
    /// Behave like Scylla before 2025.1: `/localnodes` ignores `dc` and
    /// `rack` and always lists the queried node's own datacenter.
    pub legacy_ignores_dc_rack: bool,
}

/// A handle on a running simulated cluster. Clones share the cluster; it is
/// shut down by [`SimCluster::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct SimCluster {
    owner: Arc<Owner>,
}

/// Per-node request counters, counted when a request arrives.
#[derive(Debug, Default)]
struct Counters {
    localnodes: AtomicU64,
    health: AtomicU64,
}

/// What the cluster knows about one node; shared with the HTTP tasks.
struct NodeEntry {
    addr: IpAddr,
    dc: String,
    rack: String,
    listed: bool,
    fault: Fault,
    counters: Arc<Counters>,
}

/// State read by the HTTP tasks. Its lock is only ever held briefly, never
/// across an `.await` or a wait.
struct Shared {
    nodes: Mutex<Vec<NodeEntry>>,
    rng: AtomicU64,
    host_ids: Vec<String>,
    legacy_ignores_dc_rack: bool,
    /// Whether nodes serve HTTPS (for `Location` under `Fault::Redirect`).
    https: bool,
}

/// Owns the background thread; dropping it shuts the cluster down. The HTTP
/// tasks hold `Arc<Shared>` only, never this, so no cycle keeps it alive.
struct Owner {
    shared: Arc<Shared>,
    port: u16,
    tls: Option<TlsAcceptor>,
    rt: tokio::runtime::Handle,
    thread_id: ThreadId,
    /// Serializes control operations (which may wait for tasks to end). The
    /// HTTP tasks never take it. Lock order: `control`, then `shared.nodes`.
    control: Mutex<Control>,
}

struct Control {
    shut: bool,
    /// The running servers: exactly the nodes whose fault is not `Down`.
    servers: HashMap<IpAddr, ServerHandle>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Every address as a node of the default datacenter and rack.
fn default_located(addrs: &[IpAddr]) -> Vec<SimNode> {
    addrs
        .iter()
        .map(|&addr| SimNode::new(addr, DEFAULT_DC, DEFAULT_RACK))
        .collect()
}

impl SimCluster {
    /// Starts one node per address, all on `port` (0 = choose a free port
    /// once, then use it for every node), on a dedicated background thread
    /// running its own tokio runtime. Every node starts listed and healthy,
    /// in datacenter [`DEFAULT_DC`], rack [`DEFAULT_RACK`], serving HTTP.
    ///
    /// Fails with `InvalidInput` on duplicate addresses, and with the bind
    /// error if an address cannot be bound (with port 0, `AddrInUse` on a
    /// later node is retried with a fresh port a few times first). With no
    /// addresses and port 0, a port that was free on `127.0.0.1` is chosen.
    pub fn start(addrs: &[IpAddr], port: u16) -> io::Result<SimCluster> {
        SimCluster::start_with(&default_located(addrs), port, SimOptions::default())
    }

    /// [`SimCluster::start`] over HTTPS with `tls`.
    pub fn start_https(addrs: &[IpAddr], port: u16, tls: SimTls) -> io::Result<SimCluster> {
        let options = SimOptions {
            tls: Some(tls),
            ..SimOptions::default()
        };
        SimCluster::start_with(&default_located(addrs), port, options)
    }

    /// [`SimCluster::start`] with each node's datacenter and rack, and the
    /// cluster's options. Also fails with `InvalidInput` on an empty dc or
    /// rack name, or on TLS material that does not parse or fit together.
    pub fn start_with(nodes: &[SimNode], port: u16, options: SimOptions) -> io::Result<SimCluster> {
        for (i, n) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|m| m.addr == n.addr) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("duplicate simulated node address {}", n.addr),
                ));
            }
            check_location(&n.dc, &n.rack)?;
        }
        let tls = options
            .tls
            .as_ref()
            .map(|t| server_config(t).map(TlsAcceptor::from))
            .transpose()?;
        let addrs: Vec<IpAddr> = nodes.iter().map(|n| n.addr).collect();
        let (port, listeners) = bind_all(&addrs, port)?;
        let (rt, stop, thread) = spawn_runtime()?;
        let host_id_seed = seed();
        let shared = Arc::new(Shared {
            nodes: Mutex::new(
                nodes
                    .iter()
                    .map(|n| NodeEntry {
                        addr: n.addr,
                        dc: n.dc.clone(),
                        rack: n.rack.clone(),
                        listed: true,
                        fault: Fault::None,
                        counters: Arc::default(),
                    })
                    .collect(),
            ),
            rng: AtomicU64::new(seed()),
            host_ids: (0..HOST_IDS_PER_RESPONSE)
                .map(|i| host_id(host_id_seed.wrapping_add(i as u64)))
                .collect(),
            legacy_ignores_dc_rack: options.legacy_ignores_dc_rack,
            https: tls.is_some(),
        });
        let owner = Owner {
            shared,
            port,
            tls,
            rt,
            thread_id: thread.thread().id(),
            control: Mutex::new(Control {
                shut: false,
                servers: HashMap::new(),
                stop: Some(stop),
                thread: Some(thread),
            }),
        };
        // From here on, an early return drops `owner`, which stops the thread.
        {
            let mut ctl = owner.control();
            for (&addr, listener) in addrs.iter().zip(listeners) {
                let server = owner.serve(addr, listener)?;
                ctl.servers.insert(addr, server);
            }
        }
        info!(
            port,
            nodes = ?nodes,
            https = options.tls.is_some(),
            legacy = options.legacy_ignores_dc_rack,
            "simulated Alternator cluster started"
        );
        Ok(SimCluster {
            owner: Arc::new(owner),
        })
    }

    /// Whether the nodes serve HTTPS.
    pub fn is_https(&self) -> bool {
        self.owner.tls.is_some()
    }

    /// The port every node listens on.
    pub fn port(&self) -> u16 {
        self.owner.port
    }

    /// Every node that exists (up or down), in start order.
    pub fn nodes(&self) -> Vec<IpAddr> {
        self.owner.shared.lock().iter().map(|n| n.addr).collect()
    }

    /// The nodes currently listed in `/localnodes` (of any datacenter), in
    /// start order.
    pub fn listed(&self) -> Vec<IpAddr> {
        self.owner.shared.listed()
    }

    /// The `addr:port` a node listens on (whether or not it exists).
    pub fn socket_addr(&self, addr: IpAddr) -> SocketAddr {
        SocketAddr::new(addr, self.owner.port)
    }

    /// A node's current fault; `None` if there is no such node.
    pub fn fault(&self, addr: IpAddr) -> Option<Fault> {
        self.owner
            .shared
            .lock()
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.fault)
    }

    /// The host-ID strings that [`Fault::HostIds`] adds to `/localnodes`
    /// (fixed for the cluster's lifetime).
    pub fn host_ids(&self) -> Vec<String> {
        self.owner.shared.host_ids.clone()
    }

    /// A node's datacenter and rack; `None` if there is no such node.
    pub fn location(&self, addr: IpAddr) -> Option<(String, String)> {
        self.owner
            .shared
            .lock()
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| (n.dc.clone(), n.rack.clone()))
    }

    /// Starts a node, listed and healthy, on the cluster's port, in
    /// [`DEFAULT_DC`] / [`DEFAULT_RACK`]. Fails with `AlreadyExists` if the
    /// node exists, or with the bind error.
    pub fn add_node(&self, addr: IpAddr) -> io::Result<()> {
        self.owner.add_node(addr, DEFAULT_DC, DEFAULT_RACK)
    }

    /// [`SimCluster::add_node`] in the given datacenter and rack
    /// (`InvalidInput` if either is empty).
    pub fn add_node_in(&self, addr: IpAddr, dc: &str, rack: &str) -> io::Result<()> {
        check_location(dc, rack)?;
        self.owner.add_node(addr, dc, rack)
    }

    /// Moves a node to another datacenter and rack, effective for the next
    /// `/localnodes` answer of every node. Unknown nodes and empty names are
    /// ignored (logged).
    pub fn set_location(&self, addr: IpAddr, dc: &str, rack: &str) {
        if let Err(e) = check_location(dc, rack) {
            warn!(node = %addr, error = %e, "set_location ignored");
            return;
        }
        let mut nodes = self.owner.shared.lock();
        match nodes.iter_mut().find(|n| n.addr == addr) {
            Some(n) => {
                n.dc = dc.to_owned();
                n.rack = rack.to_owned();
                info!(node = %addr, dc, rack, "simulated node moved");
            }
            None => warn!(node = %addr, "set_location: no such simulated node"),
        }
    }

    /// Stops a node (closing its listener and connections) and unlists it; it
    /// no longer appears in [`SimCluster::nodes`] and its counters are gone.
    /// Unknown nodes are ignored.
    pub fn remove_node(&self, addr: IpAddr) {
        self.owner.remove_node(addr)
    }

    /// Sets whether a node appears in `/localnodes` (on every node, for its
    /// datacenter and rack), independently of its fault. Unknown nodes are
    /// ignored.
    pub fn set_listed(&self, addr: IpAddr, listed: bool) {
        let mut nodes = self.owner.shared.lock();
        match nodes.iter_mut().find(|n| n.addr == addr) {
            Some(n) => {
                n.listed = listed;
                info!(node = %addr, listed, "simulated node membership changed");
            }
            None => warn!(node = %addr, "set_listed: no such simulated node"),
        }
    }

    /// Sets how a node's HTTP server behaves; see [`SimCluster::try_set_fault`].
    /// Errors (unknown node, failure to re-bind after `Down`) are logged.
    pub fn set_fault(&self, addr: IpAddr, fault: Fault) {
        if let Err(e) = self.try_set_fault(addr, fault) {
            warn!(node = %addr, ?fault, error = %e, "set_fault failed");
        }
    }

    /// Sets how a node's HTTP server behaves, taking effect for requests that
    /// arrive from now on. Going to [`Fault::Down`] returns once the listener
    /// and every open connection of that node are closed (bounded wait).
    /// Going from `Down` to another fault re-binds the same `addr:port` before
    /// returning; if that fails, the node stays `Down` and the error is
    /// returned. `NotFound` for an unknown node.
    pub fn try_set_fault(&self, addr: IpAddr, fault: Fault) -> io::Result<()> {
        self.owner.set_fault(addr, fault)
    }

    /// Closes every connection the node has open, as Alternator does when it
    /// closes an idle keep-alive connection, while it goes on listening and
    /// serving new connections (whatever its fault says). An idle connection
    /// is closed at once; one with a request under way, once its response is
    /// written (so a request that hangs keeps its connection until it is
    /// answered or the node goes [`Fault::Down`]); one still in its TLS
    /// handshake, at once. Returns without waiting for the sockets to close.
    /// Nothing to close on a `Down` node; `NotFound` for an unknown node.
    pub fn close_connections(&self, addr: IpAddr) -> io::Result<()> {
        self.owner.close_connections(addr)
    }

    /// [`SimCluster::set_fault`] on every node.
    pub fn set_fault_all(&self, fault: Fault) {
        for addr in self.nodes() {
            self.set_fault(addr, fault);
        }
    }

    /// `GET /localnodes` requests that node has received (0 if unknown).
    pub fn localnodes_requests(&self, addr: IpAddr) -> u64 {
        self.owner
            .counters(addr)
            .map_or(0, |c| c.localnodes.load(Ordering::Relaxed))
    }

    /// `GET /` requests that node has received (0 if unknown).
    pub fn health_requests(&self, addr: IpAddr) -> u64 {
        self.owner
            .counters(addr)
            .map_or(0, |c| c.health.load(Ordering::Relaxed))
    }

    /// Stops every node and the background thread; returns once their
    /// sockets are closed. Idempotent; also done on drop of the last handle.
    /// Afterwards `add_node` and `try_set_fault` fail, and the other methods
    /// only read or change the recorded state (no socket is opened).
    pub fn shutdown(&self) {
        self.owner.shutdown()
    }
}

impl fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCluster")
            .field("port", &self.port())
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<NodeEntry>> {
        // A panic while holding this lock cannot leave the data inconsistent
        // (every update is a single field store), so poisoning is ignored.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn listed(&self) -> Vec<IpAddr> {
        self.lock()
            .iter()
            .filter(|n| n.listed)
            .map(|n| n.addr)
            .collect()
    }

    /// The addresses `/localnodes` on node `me` lists for the raw query
    /// string `query`, in start order; `None` if `me` no longer exists.
    fn localnodes(&self, me: IpAddr, query: Option<&str>) -> Option<Vec<IpAddr>> {
        let (mut dc, mut rack) = (None, None);
        if !self.legacy_ignores_dc_rack {
            for (name, value) in query.into_iter().flat_map(query_pairs) {
                // An empty value means unset; the last occurrence wins.
                let value = (!value.is_empty()).then_some(value);
                match name.as_str() {
                    "dc" => dc = value,
                    "rack" => rack = value,
                    _ => {}
                }
            }
        }
        let nodes = self.lock();
        let own_dc = &nodes.iter().find(|n| n.addr == me)?.dc;
        let dc = dc.as_deref().unwrap_or(own_dc);
        Some(
            nodes
                .iter()
                .filter(|n| n.listed && n.dc == dc && rack.as_ref().is_none_or(|r| n.rack == *r))
                .map(|n| n.addr)
                .collect(),
        )
    }

    /// The node's current fault; `Down` if it no longer exists (its
    /// connections are being closed).
    fn fault_of(&self, addr: IpAddr) -> Fault {
        self.lock()
            .iter()
            .find(|n| n.addr == addr)
            .map_or(Fault::Down, |n| n.fault)
    }

    fn next_random(&self) -> u64 {
        splitmix64(
            self.rng
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                .wrapping_add(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// Fisher-Yates with the cluster's generator (the tiny modulo bias does
    /// not matter here).
    fn shuffle<T>(&self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_random() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

impl Owner {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Poisoning only means a control call panicked; the map and flags
        // are still usable.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_sim_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }

    fn counters(&self, addr: IpAddr) -> Option<Arc<Counters>> {
        self.shared
            .lock()
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.counters.clone())
    }

    /// Starts serving `listener` for node `addr` on the runtime.
    fn serve(&self, addr: IpAddr, listener: std::net::TcpListener) -> io::Result<ServerHandle> {
        let counters = self
            .counters(addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such simulated node"))?;
        let handle = ServerHandle::start(
            &self.rt,
            listener,
            addr,
            counters,
            self.shared.clone(),
            self.tls.clone(),
        )?;
        info!(node = %addr, port = self.port, "simulated node listening");
        Ok(handle)
    }

    /// Stops a server and (unless called on the simulator's own thread, where
    /// waiting would deadlock) waits until its sockets are closed.
    fn stop_server(&self, addr: IpAddr, server: ServerHandle) {
        if !server.stop(if self.on_sim_thread() {
            None
        } else {
            Some(STOP_TIMEOUT)
        }) {
            warn!(node = %addr, "simulated node did not close its connections in time");
        }
        info!(node = %addr, "simulated node stopped listening");
    }

    fn add_node(&self, addr: IpAddr, dc: &str, rack: &str) -> io::Result<()> {
        let mut ctl = self.control();
        if ctl.shut {
            return Err(shut_down_error());
        }
        if self.shared.lock().iter().any(|n| n.addr == addr) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("simulated node {addr} already exists"),
            ));
        }
        let listener = bind(SocketAddr::new(addr, self.port))?;
        self.shared.lock().push(NodeEntry {
            addr,
            dc: dc.to_owned(),
            rack: rack.to_owned(),
            listed: true,
            fault: Fault::None,
            counters: Arc::default(),
        });
        match self.serve(addr, listener) {
            Ok(server) => {
                ctl.servers.insert(addr, server);
                info!(node = %addr, "simulated node added");
                Ok(())
            }
            Err(e) => {
                self.shared.lock().retain(|n| n.addr != addr);
                Err(e)
            }
        }
    }

    fn remove_node(&self, addr: IpAddr) {
        let mut ctl = self.control();
        let existed = {
            let mut nodes = self.shared.lock();
            let before = nodes.len();
            nodes.retain(|n| n.addr != addr);
            nodes.len() != before
        };
        if !existed {
            warn!(node = %addr, "remove_node: no such simulated node");
            return;
        }
        if let Some(server) = ctl.servers.remove(&addr) {
            self.stop_server(addr, server);
        }
        info!(node = %addr, "simulated node removed");
    }

    fn set_fault(&self, addr: IpAddr, fault: Fault) -> io::Result<()> {
        let mut ctl = self.control();
        if ctl.shut {
            return Err(shut_down_error());
        }
        let old = self.fault(addr)?;
        match (old == Fault::Down, fault == Fault::Down) {
            (false, true) => {
                self.store_fault(addr, fault);
                if let Some(server) = ctl.servers.remove(&addr) {
                    self.stop_server(addr, server);
                }
            }
            (true, false) => {
                let listener = bind(SocketAddr::new(addr, self.port))?;
                // The new fault is in place before the first request arrives.
                self.store_fault(addr, fault);
                match self.serve(addr, listener) {
                    Ok(server) => {
                        ctl.servers.insert(addr, server);
                    }
                    Err(e) => {
                        self.store_fault(addr, Fault::Down);
                        return Err(e);
                    }
                }
            }
            (true, true) | (false, false) => self.store_fault(addr, fault),
        }
        if old != fault {
            info!(node = %addr, ?old, new = ?fault, "simulated node fault changed");
        }
        Ok(())
    }

    fn close_connections(&self, addr: IpAddr) -> io::Result<()> {
        let ctl = self.control();
        if ctl.shut {
            return Err(shut_down_error());
        }
        // A `Down` node has no server, and no connection to close.
        let fault = self.fault(addr)?;
        if let Some(server) = ctl.servers.get(&addr) {
            server.close_connections();
            info!(node = %addr, ?fault, "simulated node closed its connections");
        }
        Ok(())
    }

    fn fault(&self, addr: IpAddr) -> io::Result<Fault> {
        self.shared
            .lock()
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.fault)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no simulated node {addr}"))
            })
    }

    fn store_fault(&self, addr: IpAddr, fault: Fault) {
        if let Some(n) = self.shared.lock().iter_mut().find(|n| n.addr == addr) {
            n.fault = fault;
        }
    }

    fn shutdown(&self) {
        let mut ctl = self.control();
        if ctl.shut {
            return;
        }
        ctl.shut = true;
        // Dropping the runtime (when its thread ends) drops every task and so
        // closes every listener and connection; the servers need no stopping
        // one by one.
        ctl.servers.clear();
        drop(ctl.stop.take());
        if let Some(thread) = ctl.thread.take() {
            if self.on_sim_thread() {
                warn!("simulated cluster shut down from its own thread; not waiting");
            } else if thread.join().is_err() {
                warn!("simulated cluster thread panicked");
            }
        }
        info!(port = self.port, "simulated Alternator cluster shut down");
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn check_location(dc: &str, rack: &str) -> io::Result<()> {
    if dc.is_empty() || rack.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a simulated node's dc and rack names must not be empty",
        ));
    }
    Ok(())
}

/// The `name=value` pairs of a query string, percent-decoded (`+` is a
/// space); a pair without `=` has an empty value.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rustls server configuration for `tls`; `InvalidInput` on bad PEM or
/// a key that does not fit the certificate.
fn server_config(tls: &SimTls) -> io::Result<Arc<ServerConfig>> {
    let invalid = |what: &str, e: &dyn fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("simulated TLS {what}: {e}"),
        )
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(tls.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate chain", &e))?;
    if chain.is_empty() {
        return Err(invalid("certificate chain", &"no certificate in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| invalid("private key", &e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", &e))?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| invalid("client CA", &e))?;
                roots.add(cert).map_err(|e| invalid("client CA", &e))?;
            }
            if roots.is_empty() {
                return Err(invalid("client CA", &"no certificate in the PEM"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid("client verifier", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    Ok(Arc::new(config))
}

fn shut_down_error() -> io::Error {
    io::Error::other("simulated cluster is shut down")
}

/// A listening socket with `SO_REUSEADDR`, so that an address can be bound
/// again right after it was closed (connections in `TIME_WAIT` notwithstanding).
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds every address on `port`; with port 0, on the port the first bind
/// got, retrying with a fresh port when a later address has it in use.
fn bind_all(addrs: &[IpAddr], port: u16) -> io::Result<(u16, Vec<std::net::TcpListener>)> {
    if addrs.is_empty() {
        if port != 0 {
            return Ok((port, Vec::new()));
        }
        let probe = bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
        return Ok((probe.local_addr()?.port(), Vec::new()));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut chosen = port;
        let mut listeners = Vec::with_capacity(addrs.len());
        let mut failure = None;
        for &addr in addrs {
            match bind(SocketAddr::new(addr, chosen)) {
                Ok(listener) => {
                    if chosen == 0 {
                        chosen = listener.local_addr()?.port();
                    }
                    listeners.push(listener);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => return Ok((chosen, listeners)),
            Some(e)
                if port == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS =>
            {
                warn!(port = chosen, error = %e, "simulated cluster port taken; trying another");
            }
            Some(e) => return Err(e),
        }
    }
}

/// Starts the background thread and its runtime; returns the runtime's handle,
/// the sender whose drop stops it, and the thread.
fn spawn_runtime() -> io::Result<(tokio::runtime::Handle, oneshot::Sender<()>, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // The runtime is built, run and dropped on its own thread, so that it is
    // never dropped inside a caller's async context.
    let thread = std::thread::Builder::new()
        .name("alternator-sim".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if ready_tx.send(Ok(rt.handle().clone())).is_err() {
                return;
            }
            // Ends when the sender is used or dropped.
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(handle)) => Ok((handle, stop_tx, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("simulated cluster thread died at start"))
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random-looking version-4 UUID string, like a Scylla host ID.
fn host_id(seed: u64) -> String {
    let hi = splitmix64(seed);
    let lo = splitmix64(hi ^ seed.rotate_left(17));
    let hi = (hi & !0xF000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}
