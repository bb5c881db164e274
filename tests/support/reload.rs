//! Reloading a running server from the tests: the configuration file
//! replaced whole, then SIGHUP.

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use super::{Responder, DOMAIN};

/// Writes `text` to `path` through a rename, so a reader never sees half of it.
pub fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write the config file");
    std::fs::rename(&tmp, path).expect("replace the config file");
}

/// Sends SIGHUP (the process keeps running).
pub fn sighup(r: &mut Responder) {
    let (exited, _) = r.signal(libc::SIGHUP, Duration::ZERO);
    assert!(exited.is_none(), "SIGHUP stopped the server: {exited:?}");
}

/// Sends SIGHUP and waits (5 s at most) for the `n`-th log line containing
/// `needle`.
pub fn sighup_and_wait(r: &mut Responder, needle: &str, n: usize) {
    sighup(r);
    assert!(
        r.wait_for_log_count(needle, n, Duration::from_secs(5)),
        "no {n}th {needle:?} after SIGHUP; log:\n{}",
        r.log_text()
    );
}

/// The answer TTL the responder gives now (one UDP query).
pub fn ttl_now(r: &Responder) -> u32 {
    let reply = r
        .client()
        .query(DOMAIN, Rtype::A)
        .unwrap_or_else(|| panic!("no reply; log:\n{}", r.log_text()));
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    let ttls = reply.answer_ttls();
    assert!(!ttls.is_empty(), "no answer record");
    ttls[0]
}
