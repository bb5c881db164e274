//! The signal that stops the workers.
//!
//! The io_uring worker sees it between waits, which end at least every
//! 200 ms. The recvmmsg worker blocks without any timeout: a receive
//! timeout arms and cancels a kernel timer on every wait, and at 10,000
//! queries a second, one wait per query, that cost 4% of the CPU per query
//! (`benches/README.md`, experiment 21). Instead, setting the signal shuts
//! each registered socket down for reading, which wakes a blocked
//! `recvmmsg` or `poll` at once (Linux wakes the waiters of an unconnected
//! UDP socket too, while reporting `ENOTCONN`).

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Set once to make every worker return; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<State>);

#[derive(Debug, Default)]
struct State {
    set: AtomicBool,
    /// Copies of the descriptors of the sockets to shut down when set,
    /// each with the number of its [`Registration`].
    wake: Mutex<Vec<(u64, OwnedFd)>>,
    /// Numbers the registrations.
    registered: std::sync::atomic::AtomicU64,
}

/// A socket registered with [`StopSignal::wake_on_stop`]; dropping it (the
/// worker returned, or unwound from a panic) closes the signal's copy, so
/// that a socket nobody reads leaves its `SO_REUSEPORT` group.
#[must_use = "the socket is woken only while the registration lives"]
pub(crate) struct Registration {
    signal: StopSignal,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.signal.wake_list().retain(|(id, _)| *id != self.id);
    }
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Whether the signal is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::Acquire)
    }

    /// Sets the signal and shuts every registered socket down for reading;
    /// safe to call more than once.
    pub fn set(&self) {
        self.0.set.store(true, Ordering::Release);
        for (_, fd) in self.wake_list().drain(..) {
            shut_reading(&fd);
        }
    }

    /// Has `socket` shut down for reading when the signal is set (at once
    /// if it is set already), so that a worker blocked on it wakes up; for
    /// as long as the returned registration lives.
    pub(crate) fn wake_on_stop(&self, socket: &UdpSocket) -> io::Result<Registration> {
        let copy = OwnedFd::from(socket.try_clone()?);
        let id = self.0.registered.fetch_add(1, Ordering::Relaxed);
        let mut wake = self.wake_list();
        // Checked under the lock: `set` stores the flag before taking it,
        // so either it finds this socket in the list or this sees the flag.
        if self.is_set() {
            shut_reading(&copy);
        } else {
            wake.push((id, copy));
        }
        Ok(Registration {
            signal: self.clone(),
            id,
        })
    }

    fn wake_list(&self) -> std::sync::MutexGuard<'_, Vec<(u64, OwnedFd)>> {
        // The list holds descriptors only: one left by a panicking holder
        // is still whole.
        self.0.wake.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `shutdown(SHUT_RD)`; on an unconnected UDP socket Linux answers
/// `ENOTCONN` but still marks it shut and wakes its waiters.
fn shut_reading(fd: &OwnedFd) {
    // SAFETY: `fd` is an open descriptor owned for the duration of the call.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A blocking receive on `socket` in a thread; its result arrives on
    /// the returned channel.
    fn blocked_receive(socket: UdpSocket) -> mpsc::Receiver<io::Result<usize>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let _ = tx.send(socket.recv(&mut buf));
        });
        rx
    }

    #[test]
    fn setting_the_signal_wakes_a_receive_blocked_without_a_timeout() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stop = StopSignal::new();
        let _registered = stop.wake_on_stop(&socket).unwrap();
        let done = blocked_receive(socket);
        assert!(
            done.recv_timeout(Duration::from_millis(50)).is_err(),
            "blocks until the signal"
        );
        stop.set();
        let woken = done.recv_timeout(Duration::from_secs(10));
        assert!(matches!(woken, Ok(Ok(0))), "{woken:?}");
        assert!(stop.is_set());
        stop.set();
    }

    #[test]
    fn a_socket_registered_after_the_signal_is_shut_at_once() {
        let stop = StopSignal::new();
        stop.set();
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        let _registered = stop.wake_on_stop(&socket).unwrap();
        let woken = blocked_receive(socket).recv_timeout(Duration::from_secs(10));
        assert!(matches!(woken, Ok(Ok(0))), "{woken:?}");
    }

    #[test]
    fn a_socket_whose_registration_is_dropped_is_closed_by_its_owner_alone() {
        let stop = StopSignal::new();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let registered = stop.wake_on_stop(&socket).unwrap();
        drop(registered);
        drop(socket);
        // No copy is left open: the port is free again.
        UdpSocket::bind(addr).expect("the port was released");
        stop.set();
    }
}
