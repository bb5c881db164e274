//! The command line and the options it shares with the TOML file: one field
//! per option, whose doc comment is its `--help` text and whose name is both
//! the flag and the file's key. Everything else about an option (its default,
//! its checks) is in `resolve`, which also fills the default in here so that
//! `--check` prints it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use super::{CpuList, HumanDuration, IoMode, LocationSpec, LogFormat, NameSpec, Scheme};
use crate::access::Denied;
use crate::dns::AnswerMode;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "alternator-dns",
    version,
    about = "DNS load balancer for ScyllaDB Alternator",
    long_about = "DNS load balancer for ScyllaDB Alternator.\n\n\
        Answers queries for one name with the address of a live Alternator node chosen at \
        random (TTL 4 s by default), so that DynamoDB clients that know one endpoint spread \
        over the whole cluster. The live nodes are learnt by polling Alternator's \
        `GET /localnodes` in the background.\n\n\
        Every option can also be set in a TOML file given with --config, under the same \
        name without the dashes in front (e.g. `refresh-interval = \"1s\"`, \
        `seed = [\"10.0.0.1\"]`); flags override the file.\n\n\
        Example: alternator-dns --domain alternator.example.com --seed 10.0.0.1 --listen 0.0.0.0:53 \
        --ns ns1.alternator.example.com=10.0.0.53",
    after_help = crate::exit::HELP
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub options: Options,

    /// Read options from this TOML file (flags given as well override it).
    #[arg(long, value_name = "FILE", global = false)]
    pub config: Option<PathBuf>,

    /// Load and check everything start-up loads (seeds resolved, TLS files read,
    /// --user looked up, io_uring probed with --io uring), print the effective configuration as
    /// TOML, and exit: 0 if the server would start (short of binding its
    /// addresses), else the exit status of the real start, with the reason.
    #[arg(long)]
    pub check: bool,
}

/// What else the binary does besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a running server hands out: each node (listed, health, served,
    /// excluded, its last probe, the names serving it) and each name with the
    /// nodes it serves, from the server's /nodes endpoint. Exits 1 when the
    /// server cannot be reached.
    Status(StatusArgs),
}

/// `alternator-dns status`'s own flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server's metrics endpoint [default: the --metrics-listen of --config FILE,
    /// else 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    /// Read the server's metrics-listen from its configuration file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the /nodes JSON as the server wrote it instead of tables
    #[arg(long)]
    pub json: bool,
}

/// The options shared by the command line and the TOML file.
#[derive(Debug, Default, Clone, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Address to answer DNS on, UDP and TCP (repeatable) [default: 0.0.0.0:53]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<SocketAddr>,

    /// The name served, which is also the zone apex (required), e.g. alternator.example.com
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,

    /// An Alternator node known at start, as IP, IP:PORT, [IPv6]:PORT or HOST[:PORT]
    /// (repeatable; at least one). Hostnames are resolved at start.
    #[arg(long, value_name = "HOST[:PORT]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed: Vec<String>,

    /// A further name to serve, below --domain, with the nodes of one datacenter or rack:
    /// NAME=DC or NAME=DC/RACK, e.g. dc2.alternator.example.com=dc2 (repeatable; in the
    /// config file, [[name]] tables with name, dc, rack and fallback keys)
    #[arg(long = "name", value_name = "NAME=DC[/RACK]")]
    #[serde(default, rename = "name", skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameSpec>,

    /// Where clients are, for --affinity: clients in CIDR (by source address,
    /// or by the subnet a resolver sends with ECS) are in datacenter DC and
    /// rack RACK, e.g. 10.1.0.0/16=dc1/rack1 or fd00:1::/48=dc1/rack1
    /// (repeatable; the longest matching prefix wins; in the config file,
    /// [[location]] tables with cidr = [..], dc and rack keys)
    #[arg(long = "location", value_name = "CIDR=DC[/RACK]")]
    #[serde(default, rename = "location", skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationSpec>,

    /// Answer --domain from the client's own rack: a client placed by
    /// --location gets its rack's live nodes, or its datacenter's when the
    /// rack has fewer than --affinity-min-nodes, else the usual list. Saves
    /// cross-zone traffic; see the README's "Zone-local answers". Further
    /// names opt in with `affinity = true` in their [[name]] table
    /// [default: false]
    #[arg(long, value_name = "BOOL")]
    pub affinity: Option<bool>,

    /// With --affinity: a rack, then a datacenter, with fewer live nodes than
    /// this is answered as if it had none [default: 1]
    #[arg(long, value_name = "N")]
    pub affinity_min_nodes: Option<u32>,

    /// Read the EDNS Client Subnet option (RFC 7871) that resolvers add to
    /// queries: with --affinity it places the client instead of the
    /// resolver's address, and every reply echoes it with the scope of the
    /// answer [default: true]
    #[arg(long, value_name = "BOOL")]
    pub client_subnet: Option<bool>,

    /// Port of the nodes' Alternator API [default: 8000 for http, 8043 for https]
    #[arg(long, value_name = "PORT")]
    pub alternator_port: Option<u16>,

    /// Scheme of the Alternator API [default: http]
    #[arg(long, value_name = "SCHEME")]
    pub alternator_scheme: Option<Scheme>,

    /// With https: PEM file of the CA certificates that sign the nodes' certificates
    /// [default: the system's trusted roots]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// With https: PEM certificate chain presented to nodes that require client
    /// certificates (Alternator's require_client_auth); needs --client-key
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,

    /// With https: PEM private key of --client-cert
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,

    /// With https: verify every node's certificate against this DNS name instead of
    /// the node's IP address (for clusters sharing one certificate)
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// With https: accept any server certificate. Insecure (a man in the middle can
    /// feed a false node list); logged as a warning at start [default: false]
    #[arg(long, value_name = "BOOL")]
    pub tls_insecure_skip_verify: Option<bool>,

    /// Probe each listed node's `GET /` and serve only nodes that pass [default: true]
    #[arg(long, value_name = "BOOL")]
    pub health_check: Option<bool>,

    /// How often each node is probed [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<HumanDuration>,

    /// Timeout of one probe [default: 300ms]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<HumanDuration>,

    /// Failed probes in a row that take a node out of the answers; a refused
    /// connection takes it out at once [default: 2]
    #[arg(long, value_name = "N")]
    pub health_failures: Option<u32>,

    /// Flap damping: a node taken out this many times within
    /// --health-flap-window counts as flapping, and comes back only after
    /// --health-flap-passes probes in a row pass; 0 turns damping off [default: 3]
    #[arg(long, value_name = "N")]
    pub health_flap_limit: Option<u32>,

    /// The window over which --health-flap-limit counts removals [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub health_flap_window: Option<HumanDuration>,

    /// Probes in a row a flapping node must pass to be served again [default: 5]
    #[arg(long, value_name = "N")]
    pub health_flap_passes: Option<u32>,

    /// A node never to serve, listed or not, e.g. one about to be restarted
    /// (repeatable). Still probed, so `alternator-dns status` shows when it is
    /// healthy again. Takes effect on reload (SIGHUP); a reload that would
    /// leave a served name with no node is rejected
    #[arg(long, value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IpAddr>,

    /// TTL of the A/AAAA answers, in seconds. Behind caching resolvers 0 balances best:
    /// each lookup then gets its own random node (README: "Deploying behind resolvers")
    /// [default: 4]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u32>,

    /// Nodes per answer: 1 (one random node, as Amazon does), N (N distinct random nodes,
    /// at most 64), or `all` (every node, rotated by a random offset) [default: 1]
    #[arg(long, value_name = "N|all")]
    pub answers: Option<AnswerMode>,

    /// How often to poll /localnodes, e.g. 1s, 500ms [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub refresh_interval: Option<HumanDuration>,

    /// Timeout of one /localnodes request [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub refresh_timeout: Option<HumanDuration>,

    /// Number of UDP worker threads [default: one per CPU this process may run on,
    /// or one per CPU in --cpus]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// CPUs to pin the workers to, e.g. `2-5,8`: worker i runs on the i-th CPU listed
    /// [default: the CPUs this process may run on]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,

    /// UDP I/O backend: `uring` (io_uring), `mmsg` (recvmmsg/sendmmsg), or `auto` (the
    /// one measured cheapest per query at every load: mmsg, on Linux 6.18) [default: auto]
    #[arg(long, value_name = "BACKEND")]
    pub io: Option<IoMode>,

    /// Answers to queries without the RD bit, which come from resolvers iterating
    /// from a delegation: 1, N or `all`, as --answers. A resolver caches one answer
    /// for all its clients and may rotate it for each; see the README's "Deploying
    /// behind resolvers" [default: as --answers]
    #[arg(long, value_name = "N|all")]
    pub resolver_answers: Option<AnswerMode>,

    /// A name server published at the apex, as NAME, or NAME=ADDR[,ADDR] for one
    /// inside the zone, whose addresses are then answered and added to NS answers
    /// (repeatable; give the same list to every instance serving the zone)
    /// [default: ns1.<domain> at the --listen addresses; required when one of them
    /// is 0.0.0.0 or ::]
    #[arg(long, value_name = "NAME[=ADDR,...]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns: Vec<String>,

    /// SOA MNAME (primary server) [default: the first NS name]
    #[arg(long, value_name = "NAME")]
    pub soa_mname: Option<String>,

    /// SOA RNAME (responsible mailbox) [default: hostmaster.<domain>]
    #[arg(long, value_name = "NAME")]
    pub soa_rname: Option<String>,

    /// TTL of the SOA and NS records and of the name servers' addresses; negative
    /// answers carry the smaller of it and --soa-minimum [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub soa_ttl: Option<u32>,

    /// SOA REFRESH, in seconds (no zone is transferred; zone checkers want at
    /// least 14400) [default: 14400]
    #[arg(long, value_name = "SECONDS")]
    pub soa_refresh: Option<u32>,

    /// SOA RETRY, in seconds (checkers want 3600 or more, below REFRESH)
    /// [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub soa_retry: Option<u32>,

    /// SOA EXPIRE, in seconds (checkers want a week or more, above REFRESH)
    /// [default: 1209600]
    #[arg(long, value_name = "SECONDS")]
    pub soa_expire: Option<u32>,

    /// SOA MINIMUM, in seconds: caps negative caching together with --soa-ttl
    /// (checkers want 300 to 86400) [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub soa_minimum: Option<u32>,

    /// UDP payload size advertised with EDNS(0), and the most a UDP reply may carry
    /// (512 to 4096) [default: 1232]
    #[arg(long, value_name = "BYTES")]
    pub edns_udp_size: Option<u16>,

    /// Close a TCP connection that sends no complete query for this long [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub tcp_idle_timeout: Option<HumanDuration>,

    /// TCP connections open at once per listen address; at the cap the connection
    /// idle for longest is closed to admit a new one [default: 1024]
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,

    /// Forward queries for names outside --domain to this resolver (repeatable, tried in
    /// turn; port 53 unless given) instead of answering REFUSED
    #[arg(long, value_name = "ADDR[:PORT]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,

    /// How long one upstream resolver gets to answer a forwarded query before the next
    /// is tried; when all fail the client gets SERVFAIL [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub forward_timeout: Option<HumanDuration>,

    /// Forwarded queries in progress at once; more get SERVFAIL [default: 1024]
    #[arg(long, value_name = "N")]
    pub forward_max_outstanding: Option<usize>,

    /// With --forward: forward only for sources in this network, e.g. 10.0.0.0/8
    /// (repeatable; a list replaces the default, so give 127.0.0.0/8 too to keep
    /// this machine). Other sources asking for names outside --domain get REFUSED,
    /// as without --forward. Takes effect on reload (SIGHUP)
    /// [default: 127.0.0.0/8 and ::1, this machine only]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_allow: Vec<String>,

    /// Where to serve Prometheus metrics (/metrics) and health checks (/healthz,
    /// /readyz) over HTTP; an empty value turns it off [default: 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,

    /// After binding the sockets (as root, for port 53), switch to this user and its
    /// group before serving
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Answer only sources in this network, e.g. 10.0.0.0/8 or fd00::/8 (repeatable;
    /// UDP and TCP). Takes effect on reload (SIGHUP) [default: every source]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,

    /// What sources outside --allow get: `refuse` (REFUSED) or `drop` (no answer).
    /// Takes effect on reload [default: refuse]
    #[arg(long, value_name = "POLICY")]
    pub denied: Option<Denied>,

    /// Response rate limiting: answers per second to one source network (/24 for
    /// IPv4, /56 for IPv6), in the manner of BIND's and Knot's RRL; 0 turns it off.
    /// Meant for servers exposed beyond trusted clients. Takes effect on reload
    /// [default: 0]
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,

    /// With --rate-limit: every Nth response over the limit is sent truncated (TC=1)
    /// so that real clients retry over TCP; the others are dropped. 0 drops all,
    /// 1 truncates all [default: 2]
    #[arg(long, value_name = "N")]
    pub rate_limit_slip: Option<u32>,

    /// Log format: `text` or `json` (one JSON object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}
