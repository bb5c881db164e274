//! alternator-dns: a DNS load balancer for ScyllaDB Alternator.
//!
//! DynamoDB clients know one endpoint name. This server answers that name with
//! the address of a live Alternator node chosen at random, with a short TTL, so
//! that many clients spread over the whole cluster.
//!
//! # How a UDP query flows
//! 1. [`io`]: a worker thread pinned to one CPU owns an `SO_REUSEPORT` socket per
//!    listen address and receives datagrams through `recvmmsg` ([`io::mmsg`],
//!    the default) or io_uring ([`io::uring`], `--io uring`).
//! 2. [`worker`] hands each datagram to [`dns::answer`], the pure answer path,
//!    which turns the query bytes, the current [`nodes::Snapshot`] and the
//!    worker's random generator into reply bytes.
//! 3. The backend sends the reply from the same socket, batched with others.
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
//!    fallback, fail open) and asks the driver to publish a new immutable
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
pub mod privileges;
pub mod reload;
pub mod rrl;
pub mod server;
pub mod tcp;
pub mod worker;
