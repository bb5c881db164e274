//! Setting up a ring: which optional `io_uring_setup` flags this kernel
//! accepts, tried once per process and shared by every worker.

use std::io;
use std::sync::OnceLock;

use io_uring::IoUring;

use super::{IoError, CQ_ENTRIES, SQ_ENTRIES};

/// Which optional `io_uring_setup` flags this kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetupFlags {
    pub(super) single_issuer: bool,
    pub(super) defer_taskrun: bool,
    pub(super) coop_taskrun: bool,
    pub(super) submit_all: bool,
}

impl SetupFlags {
    /// The flags set, as the kernel names them (for the log).
    pub(super) fn names(&self) -> String {
        let named = [
            (self.single_issuer, "SINGLE_ISSUER"),
            (self.defer_taskrun, "DEFER_TASKRUN"),
            (self.coop_taskrun, "COOP_TASKRUN"),
            (self.submit_all, "SUBMIT_ALL"),
        ];
        let set: Vec<&str> = named
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        match set.is_empty() {
            true => "none".to_string(),
            false => set.join(","),
        }
    }

    /// Tried in order; the first the kernel accepts is used by every worker.
    ///
    /// None has SQPOLL, and no request is punted to io-wq: batched waits
    /// rely on that. Before Linux commit e15cb2200b93 (December 2025, in the
    /// stable kernels since), a minimum-wait timeout did not see completions
    /// posted by another thread once it had expired, and a batched wait could
    /// then last its whole timeout. Turn batched waits off before adding
    /// either.
    pub(super) const CANDIDATES: [SetupFlags; 6] = [
        SetupFlags::new(true, true, true, true),
        SetupFlags::new(true, true, false, true),
        SetupFlags::new(true, false, true, true),
        SetupFlags::new(false, false, true, true),
        SetupFlags::new(false, false, false, true),
        SetupFlags::new(false, false, false, false),
    ];

    pub(super) const fn new(
        single_issuer: bool,
        defer_taskrun: bool,
        coop: bool,
        submit_all: bool,
    ) -> Self {
        Self {
            single_issuer,
            defer_taskrun,
            coop_taskrun: coop,
            submit_all,
        }
    }
}

/// The flags chosen by the first call, which also logs them once.
pub(super) fn chosen_flags() -> Result<SetupFlags, IoError> {
    static CHOSEN: OnceLock<Result<SetupFlags, i32>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| {
        let mut last = libc::ENOSYS;
        for flags in SetupFlags::CANDIDATES {
            match build_ring(flags) {
                Ok(ring) => {
                    let batched_waits = ring.params().is_feature_min_timeout();
                    tracing::info!(flags = %flags.names(), batched_waits, "io_uring setup flags");
                    return Ok(flags);
                }
                Err(e) => last = e.raw_os_error().unwrap_or(libc::EINVAL),
            }
        }
        Err(last)
    });
    chosen.map_err(|errno| IoError::UringSetup(io::Error::from_raw_os_error(errno)))
}

pub(super) fn build_ring(flags: SetupFlags) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(CQ_ENTRIES);
    if flags.single_issuer {
        builder.setup_single_issuer();
    }
    if flags.defer_taskrun {
        builder.setup_defer_taskrun();
    }
    if flags.coop_taskrun {
        builder.setup_coop_taskrun();
    }
    if flags.submit_all {
        builder.setup_submit_all();
    }
    builder.build(SQ_ENTRIES)
}
