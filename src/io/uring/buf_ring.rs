//! The provided-buffer ring the kernel receives datagrams into: registered
//! once, each buffer handed back right after its datagram is answered.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use super::BUF_LEN;

/// The provided-buffer ring: one page-aligned anonymous mapping holding the
/// ring entries (first, page-rounded) and then `count` buffers.
///
/// The kernel reads entries up to the tail we publish and writes a datagram
/// into the buffer it picks; after that completion the buffer is ours until
/// [`BufRing::recycle`] hands it back.
pub(super) struct BufRing {
    pub(super) map: NonNull<u8>,
    pub(super) map_len: usize,
    /// Bytes of the entry area (page-rounded); buffers start here.
    pub(super) entries_len: usize,
    /// Number of entries and buffers; a power of two.
    pub(super) count: u16,
    /// Local tail: entries written but maybe not yet published.
    pub(super) tail: u16,
}

/// `struct io_uring_buf`; entry 0's `resv` doubles as the ring's tail.
#[repr(C)]
pub(super) struct RawBufEntry {
    pub(super) addr: u64,
    pub(super) len: u32,
    pub(super) bid: u16,
    pub(super) resv: u16,
}

/// Offset of the tail (`resv` of entry 0) from the ring start.
pub(super) const TAIL_OFFSET: usize = 14;

impl BufRing {
    pub(super) fn new(count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let page = page_size();
        let entries_len =
            (usize::from(count) * std::mem::size_of::<RawBufEntry>()).div_ceil(page) * page;
        let map_len = entries_len + usize::from(count) * BUF_LEN;
        // SAFETY: a fresh private anonymous mapping touches no existing
        // memory; the result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        let mut ring = Self {
            map,
            map_len,
            entries_len,
            count,
            tail: 0,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// Address to register: the (page-aligned) start of the entry array.
    pub(super) fn ring_addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    pub(super) fn buf_ptr(&self, bid: u16) -> *mut u8 {
        let offset = self.entries_len + usize::from(bid % self.count) * BUF_LEN;
        self.map.as_ptr().wrapping_add(offset)
    }

    /// The first `len` bytes of buffer `bid`, or None for an id we never
    /// handed out.
    ///
    /// # Safety
    /// `bid` must have arrived in a completion and not been recycled since,
    /// so the kernel is not writing to it.
    pub(super) unsafe fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.count {
            return None;
        }
        // SAFETY: the buffer lies inside the live mapping (bid < count,
        // len clamped to BUF_LEN), the mapping is initialised (anonymous
        // memory is zero-filled), and per the caller the kernel does not
        // write to it while the returned borrow of `self` lives.
        Some(unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len.min(BUF_LEN)) })
    }

    /// Queues buffer `bid` for reuse; visible to the kernel after
    /// [`Self::publish`].
    pub(super) fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = usize::from(self.tail & (self.count - 1));
        let entry = self.map.as_ptr().cast::<RawBufEntry>().wrapping_add(index);
        // SAFETY: `entry` is inside the entry area of the live mapping and
        // aligned (page-aligned base, 16-byte entries). The kernel only
        // reads entries between its head and the published tail, and this
        // slot is past the published tail. Writing fields one by one leaves
        // `resv` alone, which for entry 0 is the tail the kernel reads.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(self.buf_ptr(bid) as u64);
            std::ptr::addr_of_mut!((*entry).len).write(BUF_LEN as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub(super) fn publish(&self) {
        let tail = self.map.as_ptr().wrapping_add(TAIL_OFFSET).cast::<u16>();
        // SAFETY: the tail is a 2-byte-aligned u16 inside the live mapping;
        // the kernel only reads it (with acquire), we are its only writer,
        // and all our accesses to it go through this atomic.
        let tail = unsafe { AtomicU16::from_ptr(tail) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; the owner
        // (Worker) drops this only after the kernel holds no reference.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}
