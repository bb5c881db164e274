//! Dropping root after binding the listening sockets.
//!
//! Started as root (e.g. to bind port 53 without systemd), the server binds
//! its sockets first and then calls [`drop_to_user`] to become an
//! unprivileged user for the rest of its life. The switch is the classic
//! sequence, done through libc:
//!
//! 1. look the user up with `getpwnam_r` (uid and primary gid);
//! 2. `setgroups(1, [gid])`: no supplementary groups but the user's own
//!    primary group (root's, such as `root` or `disk`, are gone);
//! 3. `setgid(gid)`, then `setuid(uid)` (in this order: after `setuid` the
//!    process could no longer change its group);
//! 4. verify: real, effective and saved uid and gid are the user's, the
//!    supplementary groups are just `gid`, no capability is left in the
//!    effective or permitted sets, and `setuid(0)` now fails.
//!
//! # Capabilities
//! When a process whose real, effective or saved uid was 0 changes all three
//! to non-zero, the kernel clears its permitted, effective and ambient
//! capability sets (unless `SECBIT_KEEP_CAPS` was set, which this program
//! never does), so nothing needs to be dropped by hand; step 4 checks it.
//! Sockets already bound to port 53 stay usable.
//!
//! # Threads
//! glibc applies `setgroups`/`setgid`/`setuid` to every thread of the
//! process (as POSIX requires), so it is safe to call after threads were
//! started; still, call it as early as possible: after binding, before
//! setting up io_uring instances (an `IORING_SETUP_SQPOLL` thread keeps the
//! credentials of the ring's creator; ordinary submissions use the
//! submitter's) and before serving anything. Note that once unprivileged,
//! `RLIMIT_MEMLOCK` applies to io_uring rings on kernels older than 5.12.
//!
//! Under systemd, prefer `User=` or `DynamicUser=` with
//! `AmbientCapabilities=CAP_NET_BIND_SERVICE` (see
//! `dist/alternator-dns.service`): the process then never is root, and
//! [`running_as_root`] tells the caller to skip the drop.

use std::ffi::CString;
use std::io;

use thiserror::Error;

/// Why privileges could not be dropped. Every variant names the user.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("--user {0:?} is not a valid user name (empty, or contains a NUL byte)")]
    InvalidName(String),
    #[error("--user {0:?}: no such user")]
    UnknownUser(String),
    #[error("--user {name:?}: cannot look the user up: {source}")]
    Lookup { name: String, source: io::Error },
    #[error(
        "--user {name:?}: cannot switch to that user: running as uid {euid}, not as root \
         (start as root to bind and then switch, or leave out --user)"
    )]
    NotRoot { name: String, euid: u32 },
    #[error("--user {name:?} has uid 0: switching to it would not drop any privilege")]
    TargetIsRoot { name: String },
    #[error("--user {name:?}: switching to the user failed: {call}: {source}")]
    Syscall {
        name: String,
        call: &'static str,
        source: io::Error,
    },
    #[error("--user {name:?}: switched to the user, but the check failed: {what}")]
    Verify { name: String, what: &'static str },
}

impl PrivilegeError {
    /// Whether `--user` is at fault, rather than the system (a user
    /// database that cannot be read, a call that failed): the exit status
    /// differs, see [`crate::exit`].
    pub fn is_configuration(&self) -> bool {
        !matches!(
            self,
            PrivilegeError::Lookup { .. }
                | PrivilegeError::Syscall { .. }
                | PrivilegeError::Verify { .. }
        )
    }
}

/// A user account as found by [`lookup_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether the process runs with effective uid 0 (and so may, and should,
/// drop to an unprivileged user after binding).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up `name` in the user database (`/etc/passwd`, or whatever NSS
/// is configured), with the reentrant `getpwnam_r`.
pub fn lookup_user(name: &str) -> Result<User, PrivilegeError> {
    let c_name = CString::new(name).map_err(|_| PrivilegeError::InvalidName(name.to_string()))?;
    if name.is_empty() {
        return Err(PrivilegeError::InvalidName(String::new()));
    }
    // SAFETY: sysconf has no preconditions.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut buf_len = usize::try_from(hint).unwrap_or(1024).clamp(1024, 1 << 16);
    loop {
        let mut buf = vec![0 as libc::c_char; buf_len];
        // SAFETY: passwd is plain data; all-zero is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `c_name` is a NUL-
        // terminated string, `pwd` and `result` are writable, `buf` is
        // writable for `buf.len()` bytes and outlives the use of `pwd`'s
        // string fields (we read none of them).
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            0 if result.is_null() => return Err(PrivilegeError::UnknownUser(name.to_string())),
            0 => {
                return Ok(User {
                    name: name.to_string(),
                    uid: pwd.pw_uid,
                    gid: pwd.pw_gid,
                })
            }
            libc::ERANGE if buf_len < 1 << 20 => buf_len *= 4,
            // getpwnam_r(3): these also mean "not found" with some NSS modules.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => {
                return Err(PrivilegeError::UnknownUser(name.to_string()))
            }
            errno => {
                return Err(PrivilegeError::Lookup {
                    name: name.to_string(),
                    source: io::Error::from_raw_os_error(errno),
                })
            }
        }
    }
}

/// Makes the process run as user `name` (and its primary group, and no
/// other group) for good; see the module documentation for the steps and
/// checks. Fails without changing anything when the user is unknown, has
/// uid 0, or the process does not run as root.
pub fn drop_to_user(name: &str) -> Result<(), PrivilegeError> {
    let user = lookup_user(name)?;
    drop_to(&user)
}

/// What [`drop_to_user`] checks before any system call: the user exists,
/// is not root, and this process is root. For start-up's assembly and
/// `--check`, before any socket is bound.
pub fn check_user(name: &str) -> Result<User, PrivilegeError> {
    let user = lookup_user(name)?;
    if user.uid == 0 {
        return Err(PrivilegeError::TargetIsRoot { name: user.name });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(PrivilegeError::NotRoot {
            name: user.name,
            euid,
        });
    }
    Ok(user)
}

/// [`drop_to_user`] for a user already looked up. Only system calls, no
/// user-database access (so it may also be used in a freshly forked child).
pub fn drop_to(user: &User) -> Result<(), PrivilegeError> {
    let name = || user.name.clone();
    if user.uid == 0 {
        return Err(PrivilegeError::TargetIsRoot { name: name() });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(PrivilegeError::NotRoot { name: name(), euid });
    }
    let syscall = |call: &'static str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Syscall {
                name: name(),
                call,
                source: io::Error::last_os_error(),
            })
        }
    };
    let groups = [user.gid];
    // SAFETY: `groups` is a valid array of one gid_t.
    syscall("setgroups", unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: plain system calls on integers.
    syscall("setgid", unsafe { libc::setgid(user.gid) })?;
    // SAFETY: as above.
    syscall("setuid", unsafe { libc::setuid(user.uid) })?;
    verify(user)
}

/// The checks of step 4.
fn verify(user: &User) -> Result<(), PrivilegeError> {
    let fail = |what| {
        Err(PrivilegeError::Verify {
            name: user.name.clone(),
            what,
        })
    };
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the pointers are to valid, writable locals.
    let rc = unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid)
            | libc::getresgid(&mut rgid, &mut egid, &mut sgid)
    };
    if rc != 0 {
        return fail("getresuid/getresgid failed");
    }
    if (ruid, euid, suid) != (user.uid, user.uid, user.uid) {
        return fail("the real, effective and saved uids are not all the user's");
    }
    if (rgid, egid, sgid) != (user.gid, user.gid, user.gid) {
        return fail("the real, effective and saved gids are not all the user's");
    }
    let mut groups = [0 as libc::gid_t; 4];
    // SAFETY: `groups` is writable for 4 entries, the count passed.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    if n != 1 || groups[0] != user.gid {
        return fail("supplementary groups remain besides the user's own group");
    }
    match capabilities() {
        Some((0, 0)) => {}
        Some(_) => return fail("capabilities remain in the effective or permitted set"),
        None => return fail("capget failed"),
    }
    // SAFETY: a plain system call; it must fail now.
    if unsafe { libc::setuid(0) } == 0 {
        return fail("setuid(0) succeeded: root can be regained");
    }
    Ok(())
}

/// The effective and permitted capability sets (all 64 bits) of this
/// thread, with the raw `capget` system call.
fn capabilities() -> Option<(u64, u64)> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 of capget takes a header and an array of two data
    // structs with exactly these C layouts; both are valid and writable.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Some((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_is_named_in_the_error() {
        let err = drop_to_user("alternator-dns-no-such-user").unwrap_err();
        assert!(matches!(err, PrivilegeError::UnknownUser(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "--user \"alternator-dns-no-such-user\": no such user"
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        assert!(matches!(
            lookup_user(""),
            Err(PrivilegeError::InvalidName(_))
        ));
        let err = lookup_user("no\0body").unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn root_is_found_and_refused_as_a_target() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        // Refused before any system call, so this is harmless as root too.
        let err = drop_to_user("root").unwrap_err();
        assert!(
            matches!(err, PrivilegeError::TargetIsRoot { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"root\" has uid 0"), "{err}");
    }

    #[test]
    fn capabilities_can_be_read() {
        let (effective, permitted) = capabilities().expect("capget works");
        if !running_as_root() {
            // A normal user has no capabilities (unless given ambient ones).
            assert_eq!(effective & !permitted, 0);
        }
    }

    #[test]
    fn not_root_is_a_clear_error() {
        if running_as_root() {
            // Checked in a child that first drops to nobody; see below.
            return;
        }
        let err = drop_to_user("nobody").unwrap_err();
        assert!(matches!(err, PrivilegeError::NotRoot { .. }), "{err:?}");
        assert!(err.to_string().contains("not as root"), "{err}");
    }

    /// As root, drops to `nobody` in a forked child (never in the test
    /// process) and reports what it found through the exit status.
    #[test]
    fn drops_to_nobody_in_a_child_process() {
        if !running_as_root() {
            eprintln!("not root: skipping the fork test");
            return;
        }
        // Looked up before forking: the child makes only system calls.
        let nobody = match lookup_user("nobody") {
            Ok(u) => u,
            Err(e) => {
                eprintln!("no nobody user ({e}): skipping the fork test");
                return;
            }
        };
        // SAFETY: the child only makes system calls and plain computations
        // on memory it owns (glibc's malloc is fork-safe, in case an error
        // value is built), and leaves with `_exit` without unwinding into
        // the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = std::panic::catch_unwind(|| child(&nobody)).unwrap_or(99);
            // SAFETY: ends the child at once, as it must after fork.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; `status` is writable.
            let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
            if rc == pid {
                break;
            }
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted, "waitpid: {err}");
        }
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        let why = match code {
            0 => "ok",
            1 => "drop_to failed",
            2 => "uids are not nobody's",
            3 => "gids are not nobody's",
            4 => "setuid(0) succeeded",
            5 => "capabilities remain",
            6 => "a second drop did not fail with NotRoot",
            99 => "panicked",
            _ => "unknown",
        };
        assert_eq!(code, 0, "child: {why}");
    }

    /// The child's side: 0 when everything holds.
    fn child(user: &User) -> i32 {
        if drop_to(user).is_err() {
            return 1;
        }
        // SAFETY: plain system calls without arguments.
        let (uid, euid, gid, egid) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        if (uid, euid) != (user.uid, user.uid) {
            return 2;
        }
        if (gid, egid) != (user.gid, user.gid) {
            return 3;
        }
        // SAFETY: as above; it must fail.
        if unsafe { libc::setuid(0) } == 0 {
            return 4;
        }
        if capabilities() != Some((0, 0)) {
            return 5;
        }
        match drop_to(user) {
            Err(PrivilegeError::NotRoot { euid, .. }) if euid == user.uid => 0,
            _ => 6,
        }
    }
}
