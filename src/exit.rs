//! The exit status: one code per kind of failure, so that a supervisor or a
//! script can tell a typo from a full disk. Listed in `--help` and the
//! README.

/// Success; with `--check`, the configuration would start.
pub const OK: u8 = 0;
/// The server failed while running or binding: an address in use, a
/// permission refused by the system, a worker that stopped.
pub const RUNTIME: u8 = 1;
/// The command line does not parse: an unknown flag, a value of the wrong
/// form (clap's own code).
pub const USAGE: u8 = 2;
/// The configuration is unusable (EX_CONFIG from sysexits.h): a bad or
/// conflicting option or key, a file that cannot be used (the `--config`
/// file, a CA, client certificate or key file), no `--seed` that resolves,
/// `--io uring` where io_uring is unavailable, a `--user` that cannot be
/// switched to.
pub const CONFIG: u8 = 78;

/// The exit status section of `--help`.
pub const HELP: &str = "Exit status:
  0   success; with --check: the configuration would start
  1   runtime failure: an address that cannot be bound, a worker that stopped
  2   usage error: the command line does not parse (unknown flag, malformed value)
  78  configuration error (EX_CONFIG): a bad or conflicting option or config key, an
      unusable file (--config, --ca-file, --client-cert, --client-key), no --seed
      that resolves, --io uring unavailable, a --user that cannot be switched to";
