// SPDX-License-Identifier: GPL-2.0

//! Block IO on a buffer of pages the module owns (not a command's
//! scatterlist): the IO the peer asks the primary to do in proxy mode.
//!
//! A [`BufIo`] is handed to the block layer by [`submit`]; its completion
//! (possibly in interrupt context) ends the use of the backing device and
//! puts it on a lock-free done list, then wakes the interlink thread, which
//! takes it back with [`take_done`]. Nothing here sleeps in the completion.

use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicPtr, AtomicUsize, Ordering},
};
use kernel::{bindings as kb, page::Page, prelude::*};

use super::bio::{self, Seg};
use super::{CawLock, IoRef};

/// Bytes in a page (the buffer's unit).
const PAGE: usize = kernel::page::PAGE_SIZE;

/// A zero-filled buffer of whole pages holding `len` bytes.
pub(crate) struct PageBuf {
    pages: KVec<Page>,
    len: usize,
}

impl PageBuf {
    /// A buffer for `len` bytes.
    pub(crate) fn new(len: usize) -> Result<PageBuf> {
        let n = len.div_ceil(PAGE);
        let mut pages = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            pages.push(Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?, GFP_KERNEL)?;
        }
        Ok(PageBuf { pages, len })
    }

    /// Bytes the buffer holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Runs `f(page, offset in page, range of `len` bytes from `off`)` over
    /// the pages covering `off..off + len`; `EINVAL` if that is not inside
    /// the buffer.
    fn span(&self, off: usize, len: usize, mut f: impl FnMut(&Page, usize, core::ops::Range<usize>) -> Result) -> Result {
        let end = off.checked_add(len).filter(|&e| e <= self.len).ok_or(EINVAL)?;
        let mut pos = off;
        while pos < end {
            let page = self.pages.get(pos / PAGE).ok_or(EINVAL)?;
            let in_page = pos % PAGE;
            let n = (PAGE - in_page).min(end - pos);
            f(page, in_page, (pos - off)..(pos - off + n))?;
            pos += n;
        }
        Ok(())
    }

    /// Copies `data` into the buffer at `off`.
    pub(crate) fn write_at(&mut self, off: usize, data: &[u8]) -> Result {
        self.span(off, data.len(), |page, at, r| {
            let src = data.get(r).ok_or(EINVAL)?;
            // SAFETY: `&mut self`: no IO uses the pages now and nobody else
            // reads them; `src` is valid for `src.len()` bytes, which fit in
            // the page from `at` (see `span`).
            unsafe { page.write_raw(src.as_ptr(), at, src.len()) }
        })
    }

    /// Copies the bytes at `off` into `out`.
    pub(crate) fn read_at(&self, off: usize, out: &mut [u8]) -> Result {
        self.span(off, out.len(), |page, at, r| {
            let dst = out.get_mut(r).ok_or(EINVAL)?;
            // SAFETY: no IO uses the pages while `self` is borrowed (a
            // submitted buffer is owned by its `BufIo`); `dst` is valid for
            // `dst.len()` bytes, which fit in the page from `at`.
            unsafe { page.read_raw(dst.as_mut_ptr(), at, dst.len()) }
        })
    }

    /// The buffer as IO segments (the last one may be short).
    fn segs(&self) -> impl Iterator<Item = Seg> + '_ {
        let len = self.len;
        self.pages.iter().enumerate().map(move |(i, p)| {
            let n = (len - i * PAGE).min(PAGE) as u32;
            // SAFETY: the pages belong to the `BufIo` being submitted,
            // which keeps them until its completion.
            unsafe { Seg::new(p.as_ptr(), 0, n) }
        })
    }
}

/// What a [`BufIo`] does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufOp {
    /// Reads `buf.len()` bytes.
    Read,
    /// Reads `buf.len()` bytes for a COMPARE AND WRITE: the IO's lock
    /// ([`BufIo::hold`]) stays held past the completion, for the write
    /// that follows a successful compare.
    CawRead,
    /// Writes the buffer, with forced unit access if `true`.
    Write(bool),
    /// Flushes the volatile cache (no data).
    Flush,
    /// Discards this many sectors (no data).
    Discard(u64),
    /// Writes zeroes to this many sectors, keeping them allocated (no data).
    WriteZeroes(u64),
    /// Writes the buffer (one logical block) to each block of this many
    /// sectors, with forced unit access if `true`.
    WriteSame(bool, u64),
}

/// How a [`BufIo`] counts for `crate::barrier` (proxy mode, ORDERED tasks).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gated {
    /// Not counted.
    No,
    /// Counted while it runs.
    Counted,
    /// The IO of an ORDERED task.
    Barrier,
}

/// One block IO on a [`PageBuf`], identified by the caller's `cookie`.
pub(crate) struct BufIo {
    /// The caller's identification of the IO.
    pub(crate) cookie: u64,
    /// What was done.
    pub(crate) op: BufOp,
    /// The data (read: filled by the IO).
    pub(crate) buf: PageBuf,
    /// The block layer's status (0: done), set at completion.
    pub(crate) status: u8,
    /// The use of the backing device, ended at completion.
    io: Option<IoRef>,
    /// A COMPARE AND WRITE lock the IO runs under: released at completion,
    /// except after a [`BufOp::CawRead`].
    pub(crate) hold: Option<CawLock>,
    /// Counted in [`HOLDING`] from submission to completion.
    counted: bool,
    /// Its count in `crate::barrier`, ended at completion.
    pub(crate) gated: Gated,
    /// Done-list link.
    next: *mut BufIo,
}

// SAFETY: a `BufIo` is owned by one party at a time (its submitter, the
// block layer, the done list, the interlink thread); the raw link is only
// followed by the party that took the whole list.
unsafe impl Send for BufIo {}

impl BufIo {
    /// An IO not yet submitted.
    pub(crate) fn new(cookie: u64, op: BufOp, buf: PageBuf) -> Result<KBox<BufIo>> {
        Ok(KBox::new(
            BufIo { cookie, op, buf, status: 0, io: None, hold: None, counted: false, gated: Gated::No, next: ptr::null_mut() },
            GFP_KERNEL,
        )?)
    }
}

/// Submitted IOs holding a COMPARE AND WRITE lock, not yet on the done
/// list: [`wait_holding`] waits for them, so that [`drain`] then releases
/// every lock held for a connection that ended.
static HOLDING: AtomicUsize = AtomicUsize::new(0);

/// Waits until no submitted IO holds a COMPARE AND WRITE lock (bios
/// always complete; the block layer times out what a device does not
/// answer).
pub(crate) fn wait_holding() {
    while HOLDING.load(Ordering::Acquire) != 0 {
        crate::sys::sleep_ms(1);
    }
}

/// Completed IOs, newest first (a Treiber stack: pushed from completion
/// context, taken whole by the interlink thread).
static DONE: AtomicPtr<BufIo> = AtomicPtr::new(ptr::null_mut());

/// Completion of the bios of one buffer IO.
///
/// # Safety
/// The block layer's `bi_end_io`, called once for the last bio `submit` built.
unsafe extern "C" fn buf_io_done(bio: *mut kb::bio) {
    // SAFETY: the block layer calls this once for the last bio of `submit`.
    let (status, _, private) = unsafe { bio::finish(bio) };
    let p = private.cast::<BufIo>();
    if p.is_null() {
        return;
    }
    // SAFETY: `private` is the `BufIo` leaked by `submit`, owned by this
    // completion until it is pushed below.
    let b = unsafe { &mut *p };
    b.status = status;
    // A write's lock is released now; a compare's read keeps it.
    let hold = if b.op == BufOp::CawRead { None } else { b.hold.take() };
    drop(hold);
    let counted = b.counted;
    let gated = b.gated;
    // Ended last, after the push: once it ends, the backing device may be
    // closed and the module unloaded.
    let io = b.io.take();
    // SAFETY: ours until pushed (see above).
    unsafe { push_done(p) };
    if counted {
        HOLDING.fetch_sub(1, Ordering::AcqRel);
    }
    crate::barrier::ended(gated);
    crate::sys::link_kick();
    drop(io);
}

/// Puts `b`, not submitted, on the done list with block status `status`,
/// as if it had completed so (the interlink thread answers it).
pub(crate) fn fail(mut b: KBox<BufIo>, status: u8) {
    b.status = status;
    // SAFETY: leaked just now, so only ours.
    unsafe { push_done(KBox::into_raw(b)) };
    crate::sys::link_kick();
}

/// Pushes `p` onto the done list.
///
/// # Safety
/// `p` must be a `BufIo` leaked from a `KBox`, owned by the caller, and on
/// no list.
unsafe fn push_done(p: *mut BufIo) {
    let mut head = DONE.load(Ordering::Acquire);
    loop {
        // SAFETY: the caller owns `p` until the exchange below succeeds.
        unsafe { (*p).next = head };
        match DONE.compare_exchange_weak(head, p, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
}

/// Frees what is left on the done list (at unload, once no IO is in flight).
pub(crate) fn drain() {
    let mut v = KVec::new();
    take_done(&mut v);
}

/// Submits `b` on the backing device of `io`; its completion lands on the
/// done list. On `Err` nothing was submitted and `b` comes back.
pub(crate) fn submit(mut b: KBox<BufIo>, io: IoRef, sector: u64) -> core::result::Result<(), KBox<BufIo>> {
    let dev = io.bdev();
    b.io = Some(io);
    b.counted = b.hold.is_some();
    if b.counted {
        HOLDING.fetch_add(1, Ordering::AcqRel);
    }
    let op = b.op;
    let nsegs = b.buf.pages.len() as u64;
    let raw = KBox::into_raw(b);
    // SAFETY: `raw` came from `KBox::into_raw` just above; the buffer it
    // owns stays put (pages do not move) until the completion.
    let buf = unsafe { &(*raw).buf };
    let r = match op {
        BufOp::Flush => dev.flush(raw.cast::<c_void>(), buf_io_done),
        BufOp::Read | BufOp::CawRead => dev.submit(sector, bio::OP_READ, nsegs, buf.segs(), raw.cast(), buf_io_done),
        BufOp::Write(fua) => {
            let opf = bio::OP_WRITE | bio::SYNC_WRITE | if fua { bio::FUA } else { 0 };
            dev.submit(sector, opf, nsegs, buf.segs(), raw.cast(), buf_io_done)
        }
        BufOp::Discard(n) => dev.submit_range(false, sector, n, raw.cast(), buf_io_done),
        BufOp::WriteZeroes(n) => dev.submit_range(true, sector, n, raw.cast(), buf_io_done),
        BufOp::WriteSame(fua, n) => {
            let opf = bio::OP_WRITE | bio::SYNC_WRITE | if fua { bio::FUA } else { 0 };
            match buf.segs().next() {
                // The caller checked that the range is whole blocks of the
                // buffer's size (≤ a page: one segment).
                Some(seg) if seg.len() > 0 => {
                    let blocks = n / u64::from(seg.len() >> 9).max(1);
                    dev.submit(sector, opf, blocks, bio::repeat(seg, blocks), raw.cast(), buf_io_done)
                }
                _ => Err(EINVAL),
            }
        }
    };
    match r {
        Ok(()) => Ok(()),
        Err(_) => {
            // SAFETY: nothing was submitted, so `raw` is still only ours.
            let mut b = unsafe { KBox::from_raw(raw) };
            if b.counted {
                b.counted = false;
                HOLDING.fetch_sub(1, Ordering::AcqRel);
            }
            drop(b.io.take());
            Err(b)
        }
    }
}

/// Takes the IOs completed so far (oldest first).
pub(crate) fn take_done(out: &mut KVec<KBox<BufIo>>) {
    let mut p = DONE.swap(ptr::null_mut(), Ordering::AcqRel);
    let first = out.len();
    while !p.is_null() {
        // SAFETY: every entry was leaked by `submit` and pushed once by its
        // completion; the swap above made the whole list ours.
        let b = unsafe { KBox::from_raw(p) };
        p = b.next;
        if out.push(b, GFP_KERNEL).is_err() {
            // Put back what is left (rare): it is taken next time. The
            // entry `b` whose push failed is dropped (its peer times out).
            requeue(p);
            break;
        }
    }
    if let Some(s) = out.get_mut(first..) {
        s.reverse();
    }
}

/// Pushes a taken list back onto the done list.
fn requeue(mut p: *mut BufIo) {
    while !p.is_null() {
        // SAFETY: `p` is an entry of a list taken by `take_done`.
        let next = unsafe { (*p).next };
        // SAFETY: as above; the entry is ours until pushed.
        unsafe { push_done(p) };
        p = next;
    }
}
