//! The fixed pool of reply slots that `SendMsg` requests point into; a slot
//! is untouchable from submission until its completion.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use io_uring::types::Fd;
use io_uring::{opcode, squeue};

use super::super::socket::sockaddr_to_storage;
use super::super::{RateLimitedLog, MAX_UDP_REPLY};
use super::queue::Op;

/// One reply in flight: its bytes and the kernel structures pointing at them.
pub(super) struct SendSlot {
    pub(super) reply: Vec<u8>,
    pub(super) iov: libc::iovec,
    pub(super) hdr: libc::msghdr,
    pub(super) addr: libc::sockaddr_storage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    /// Taken by the worker; the handler may be writing the reply.
    Held,
    /// Referenced by a submitted `SendMsg`; untouchable until its completion.
    InFlight,
}

/// Fixed pool of [`SendSlot`]s, allocated once.
///
/// Slots are reached only through a raw base pointer, never through a
/// reference to the whole array, so handing one slot to the handler never
/// claims exclusive access to the slots the kernel is reading.
pub(super) struct SendPool {
    pub(super) slots: NonNull<SendSlot>,
    pub(super) states: Box<[SlotState]>,
    pub(super) free: Vec<u16>,
    pub(super) in_flight: usize,
    pub(super) sent: u64,
    pub(super) failed: u64,
    pub(super) log: RateLimitedLog,
}

impl SendPool {
    pub(super) fn new(count: u16) -> Self {
        let boxed: Box<[SendSlot]> = (0..count).map(|_| SendSlot::new()).collect();
        let slots = NonNull::from(Box::leak(boxed)).cast::<SendSlot>();
        Self {
            slots,
            states: vec![SlotState::Free; usize::from(count)].into_boxed_slice(),
            free: (0..count).rev().collect(),
            in_flight: 0,
            sent: 0,
            failed: 0,
            log: RateLimitedLog::new("io_uring: reply send failed"),
        }
    }

    pub(super) fn take(&mut self) -> Option<u16> {
        let slot = self.free.pop()?;
        self.states[usize::from(slot)] = SlotState::Held;
        Some(slot)
    }

    /// Exclusive access to a held slot.
    pub(super) fn held(&mut self, slot: u16) -> &mut SendSlot {
        assert_eq!(self.states[usize::from(slot)], SlotState::Held);
        // SAFETY: `slot` indexes `states`, which has one entry per slot, so
        // it is in bounds; a Held slot is referenced by no request and no
        // other borrow, and `&mut self` makes this borrow the only one.
        unsafe { &mut *self.slots.as_ptr().add(usize::from(slot)) }
    }

    /// The cleared reply buffer of a held slot, for the handler.
    pub(super) fn reply(&mut self, slot: u16) -> &mut Vec<u8> {
        let reply = &mut self.held(slot).reply;
        reply.clear();
        reply
    }

    /// Points the slot's header at its reply and `dest` and returns the
    /// `SendMsg` entry; the slot is in flight until [`Self::complete`] (or
    /// [`Self::unsend`] if the entry could not be queued).
    pub(super) fn send(
        &mut self,
        slot: u16,
        fd: RawFd,
        socket: u16,
        dest: &SocketAddr,
    ) -> squeue::Entry {
        let s = self.held(slot);
        let namelen = sockaddr_to_storage(dest, &mut s.addr);
        s.iov = libc::iovec {
            iov_base: s.reply.as_mut_ptr().cast(),
            iov_len: s.reply.len(),
        };
        s.hdr.msg_name = (&raw mut s.addr).cast();
        s.hdr.msg_namelen = namelen;
        s.hdr.msg_iov = &raw mut s.iov;
        s.hdr.msg_iovlen = 1;
        let hdr: *const libc::msghdr = &s.hdr;
        self.states[usize::from(slot)] = SlotState::InFlight;
        self.in_flight += 1;
        opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(Op::Send { socket, slot }.encode())
    }

    /// Returns a held slot unused, or an in-flight one whose entry never
    /// reached the kernel.
    pub(super) fn unsend(&mut self, slot: u16) {
        let state = &mut self.states[usize::from(slot)];
        if *state == SlotState::InFlight {
            self.in_flight -= 1;
        }
        if *state != SlotState::Free {
            *state = SlotState::Free;
            self.free.push(slot);
        }
    }

    /// A send completion: frees the slot and counts the outcome.
    pub(super) fn complete(&mut self, slot: u16, result: i32) {
        let Some(state) = self.states.get_mut(usize::from(slot)) else {
            return;
        };
        if *state != SlotState::InFlight {
            return;
        }
        *state = SlotState::Free;
        self.free.push(slot);
        self.in_flight -= 1;
        if result < 0 {
            self.failed += 1;
            self.log.warn(&io::Error::from_raw_os_error(-result));
        } else {
            self.sent += 1;
        }
    }
}

impl SendSlot {
    pub(super) fn new() -> Self {
        Self {
            reply: Vec::with_capacity(MAX_UDP_REPLY),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: msghdr is integers and raw pointers; all-zero is a
            // valid empty header.
            hdr: unsafe { std::mem::zeroed() },
            // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
            addr: unsafe { std::mem::zeroed() },
        }
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        let slots = std::ptr::slice_from_raw_parts_mut(self.slots.as_ptr(), self.states.len());
        // SAFETY: `slots` is exactly the boxed slice leaked in `new`
        // (same pointer and length), freed once here; the owner (Worker)
        // drops the pool only after no request references a slot.
        drop(unsafe { Box::from_raw(slots) });
    }
}
