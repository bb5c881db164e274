//! alternator-dns: a DNS load balancer for ScyllaDB Alternator.
//!
//! DynamoDB clients know one endpoint name. This server answers that name with
//! the address of a live Alternator node chosen at random, with a short TTL, so
//! that many clients spread over the whole cluster.
//!
//! # How a UDP query flows
//! From the socket to the reply in four files:
//! 1. `src/io/mmsg.rs` ([`io::mmsg`], the default backend): a worker thread
//!    pinned to one CPU owns an `SO_REUSEPORT` socket per listen address,
//!    reads up to 32 datagrams with one `recvmmsg` and hands each to its
//!    [`io::PacketHandler`]. (`--io uring`: [`io::uring`] does the same
//!    through io_uring.)
//! 2. `src/responder.rs`: the handler, [`responder::UdpResponder`], drops
//!    source port 0; then [`responder::Responder`], which TCP ([`tcp`]) uses
//!    as well, checks the access list, answers from the current
//!    [`nodes::Snapshot`], applies the rate limit and counts. A name outside
//!    the zone is queued for the forwarder instead.
//! 3. `src/dns/answer.rs` ([`dns::answer`]): the pure answer path, query
//!    bytes + source address + snapshot + the worker's random generator in,
//!    reply bytes out. Junk is rejected from the header alone; what the fast
//!    path does not take is parsed and answered here.
//! 4. `src/dns/answer/fast.rs`: the common query (A or AAAA at a served
//!    name) answered by copying the snapshot's prepared records: for a name
//!    with `--affinity`, those of the client's location, placed by its
//!    source or ECS option ([`dns::placement`], `src/dns/ecs.rs`).
//!
//! Back in `src/io/mmsg.rs`, one `sendmmsg` sends every reply of the batch
//! from the socket its query came in on.
//!
//! # Where membership changes enter
//! Three files, on the control-plane thread ([`control`]):
//! 1. [`nodes::refresher`] asks a node for `GET /localnodes` (one polling
//!    round per refresh interval); health probes ([`nodes::probe`], one kept
//!    connection per node) check each listed node.
//! 2. [`nodes::driver`], the one task that writes the snapshot, runs the
//!    rounds and the probers and feeds each result, as an event with the
//!    time, to the tracker; SIGHUP reaches it too ([`reload`] loads the file).
//! 3. [`nodes::tracker`], a state machine without I/O, applies the rules of
//!    [`nodes::membership`] (listed AND healthy, rack -> datacenter -> default
//!    fallback, fail open; each location's rack -> datacenter for zone-local
//!    answers), with each node's health and flap damping in
//!    [`nodes::health`], and asks the driver to publish a new immutable
//!    [`nodes::Snapshot`] through `arc-swap`; workers pick it up on their next
//!    packet without locking.
//!
//! # The rest
//! - [`config`]: flags and TOML, checked once into a [`config::Config`];
//!   [`plan`] builds from it what start-up, `--check` and a reload run;
//!   [`exit`]: the exit status of each kind of failure.
//! - [`server`]: start-up order, worker threads, shutdown.
//! - [`tcp`]: DNS over TCP on the control plane.
//! - [`forward`]: with `--forward`, names outside the zone go to upstream
//!   resolvers, off the workers' fast path.
//! - [`policy`]: the access list, denied policy and rate limit, replaced on
//!   reload while the workers answer.
//! - The operator's view: [`nodes::view`] (what `/nodes` on the metrics
//!   listener answers, built by the tracker on request) and [`status`]
//!   (`alternator-dns status`, which prints it).
//!
//! The simulated Alternator cluster that the tests, benchmarks and demo run
//! against is the workspace's `alternator-sim` crate (`sim/`), outside this
//! one: the production binary carries none of it.

pub mod access;
pub mod config;
pub mod control;
pub mod dns;
pub mod exit;
pub mod forward;
pub mod io;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod privileges;
pub mod reload;
pub mod responder;
pub mod rrl;
pub mod server;
pub mod status;
pub mod tcp;
