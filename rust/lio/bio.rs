// SPDX-License-Identifier: GPL-2.0

//! Block IO for the data path: bios built over a command's scatterlist,
//! chained so that one completion callback runs after the last of them.
//!
//! No allocation per command beyond the bios themselves: every bio but the
//! last is chained into its successor with `bio_chain()`, which forwards the
//! first error, and only the last carries the caller's `bi_end_io` and
//! `bi_private`. Completion runs in bio completion (possibly interrupt)
//! context.

use core::{ffi::c_void, ptr::NonNull};
use kernel::{bindings as kb, prelude::*};

use super::bindings as b;
use crate::core_logic::scsi::io::blk;

/// `REQ_OP_READ`.
pub(crate) const OP_READ: u32 = kb::req_op_REQ_OP_READ;
/// `REQ_OP_WRITE`.
pub(crate) const OP_WRITE: u32 = kb::req_op_REQ_OP_WRITE;
/// `REQ_FUA`: forced unit access.
pub(crate) const FUA: u32 = 1 << kb::req_flag_bits___REQ_FUA;
/// `REQ_SYNC | REQ_IDLE`: a write someone waits for, as O_DIRECT writes
/// are; without it writeback throttling (WBT) treats the data writes of
/// a SCSI command as background writeback and holds them back.
pub(crate) const SYNC_WRITE: u32 = (1 << kb::req_flag_bits___REQ_SYNC) | (1 << kb::req_flag_bits___REQ_IDLE);
/// `REQ_PREFLUSH`: flush the volatile cache first.
pub(crate) const PREFLUSH: u32 = 1 << kb::req_flag_bits___REQ_PREFLUSH;

/// Whether a bio operation writes (odd `req_op`s are writes).
pub(crate) fn op_is_write(opf: u32) -> bool {
    opf & 1 != 0
}

/// A piece of data in a page: one scatterlist entry, or one block repeated
/// by WRITE SAME.
#[derive(Clone, Copy)]
pub(crate) struct Seg {
    page: *mut kb::page,
    offset: u32,
    len: u32,
}

/// The entries of a scatterlist.
pub(crate) struct SgIter {
    sg: *mut kb::scatterlist,
    left: u32,
}

impl SgIter {
    /// # Safety
    /// `sg` must be a scatterlist of at least `nents` entries (or NULL with
    /// `nents == 0`) that stays valid while the iterator is used.
    pub(crate) unsafe fn new(sg: *mut kb::scatterlist, nents: u32) -> Self {
        SgIter { sg, left: nents }
    }
}

/// `page_link` of a scatterlist entry without its two flag bits: the
/// entry's page, or in a chain entry the next array.
const SG_LINK_MASK: usize = kb::SG_PAGE_LINK_MASK as usize;
/// `page_link` flag: the last entry.
const SG_END: usize = kb::SG_END as usize;
/// `page_link` flag: a link to the next array, not an entry.
const SG_CHAIN: usize = kb::SG_CHAIN as usize;

impl Iterator for SgIter {
    type Item = Seg;

    /// What `sg_page()` and `sg_next()` do, done here: this runs for every
    /// page of every command, and calls to C helpers for the two cost 1-2%
    /// of a 1M read's instructions.
    fn next(&mut self) -> Option<Seg> {
        if self.left == 0 || self.sg.is_null() {
            return None;
        }
        let sg = self.sg;
        self.left -= 1;
        // SAFETY: `sg` is a valid entry per `SgIter::new`. Its successor is
        // read only while entries remain and `sg` is not marked last; an
        // entry after it marked as a chain link holds the address of the
        // next array in `page_link` (the layout of linux/scatterlist.h).
        unsafe {
            let link = (*sg).page_link;
            let seg = Seg {
                page: (link & !SG_LINK_MASK) as *mut kb::page,
                offset: (*sg).offset,
                len: (*sg).length,
            };
            self.sg = if self.left > 0 && link & SG_END == 0 {
                let next = sg.add(1);
                let next_link = (*next).page_link;
                if next_link & SG_CHAIN != 0 {
                    (next_link & !SG_LINK_MASK) as *mut kb::scatterlist
                } else {
                    next
                }
            } else {
                core::ptr::null_mut()
            };
            Some(seg)
        }
    }
}

/// The first segment of a scatterlist, for WRITE SAME's single block.
pub(crate) fn first_seg(sgl: *mut kb::scatterlist, nents: u32) -> Option<Seg> {
    // SAFETY: LIO's data scatterlist of `nents` entries, valid during the
    // command.
    unsafe { SgIter::new(sgl, nents) }.next()
}

impl Seg {
    /// `len` bytes at `offset` in `page`.
    ///
    /// # Safety
    /// The bytes must stay valid (and not be written by anyone else while
    /// a write uses them, nor read while a read fills them) until the IO
    /// they are given to completes.
    pub(crate) unsafe fn new(page: *mut kb::page, offset: u32, len: u32) -> Seg {
        Seg { page, offset, len }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}

/// The open backing device of a configured `ha` device.
#[derive(Clone, Copy)]
pub(crate) struct Bdev(NonNull<kb::file>);

// SAFETY: the file stays open while the device is configured, which outlives
// every command LIO runs on it; block IO may be issued from any thread.
unsafe impl Send for Bdev {}

impl Bdev {
    /// # Safety
    /// `file` must be an open block device file that outlives every use.
    pub(crate) unsafe fn new(file: NonNull<kb::file>) -> Self {
        Bdev(file)
    }

    /// The raw file pointer, for storing.
    pub(crate) fn raw(self) -> *mut kb::file {
        self.0.as_ptr()
    }

    /// The `struct file`, for the C helpers.
    pub(crate) fn file(self) -> *mut kb::file {
        self.0.as_ptr()
    }

    /// The `struct block_device`.
    pub(crate) fn block_device(self) -> *mut kb::block_device {
        // SAFETY: an open block device file.
        unsafe { kb::file_bdev(self.0.as_ptr()) }
    }

    fn alloc(self, nr_vecs: u16, opf: u32) -> Option<NonNull<kb::bio>> {
        // SAFETY: an open block device; `nr_vecs <= BIO_MAX_VECS`.
        NonNull::new(unsafe { b::tcm_ha_bio_alloc(self.file(), nr_vecs, opf) }.cast::<kb::bio>())
    }

    /// Submits `segs` starting at 512-byte `sector` with operation `opf` as
    /// chained bios; `end_io` runs once with `private` after the last one
    /// completes, also on error and for an empty `segs` (at once). `Err` means nothing was submitted and
    /// `end_io` will not run. `nr_segs` sizes the bios (as `bio_max_segs`
    /// does): a 4 KiB command gets a one-vector bio, not a 256-vector one.
    pub(crate) fn submit(
        self,
        mut sector: u64,
        opf: u32,
        nr_segs: u64,
        segs: impl Iterator<Item = Seg>,
        private: *mut c_void,
        end_io: unsafe extern "C" fn(*mut kb::bio),
    ) -> Result {
        let max = u64::from(kb::BIO_MAX_VECS);
        // Lossless: at most BIO_MAX_VECS (256), and at least one.
        let vecs = nr_segs.clamp(1, max) as u16;
        let mut bio = self.alloc(vecs, opf).ok_or(ENOMEM)?;
        let mut plug = kb::blk_plug::default();
        // SAFETY: `plug` lives on this stack frame until `blk_finish_plug`.
        unsafe { kb::blk_start_plug(&mut plug) };
        // SAFETY: `bio` was just allocated and is owned here until submitted.
        unsafe { (*bio.as_ptr()).bi_iter.bi_sector = sector };
        let mut status = blk::OK;
        'segs: for seg in segs {
            loop {
                // SAFETY: `seg` names `len` bytes of a page of the command's
                // data, which lives until the command completes.
                let added = unsafe { kb::bio_add_page(bio.as_ptr(), seg.page, seg.len, seg.offset) };
                if added == seg.len as i32 {
                    break;
                }
                // SAFETY: `bio` is owned here and not yet submitted.
                let empty = unsafe { (*bio.as_ptr()).bi_vcnt } == 0;
                let next = if empty { None } else { self.alloc(vecs, opf) };
                let Some(next) = next else {
                    // Cannot happen with GFP_NOIO and a mempool (bio_alloc
                    // then never fails) or with page-sized segments; fail
                    // the command rather than loop.
                    status = blk::RESOURCE;
                    break 'segs;
                };
                // SAFETY: both bios are owned here; `bio` is chained into
                // `next` and handed to the block layer, which owns it from
                // now on.
                unsafe {
                    (*next.as_ptr()).bi_iter.bi_sector = sector;
                    kb::bio_chain(bio.as_ptr(), next.as_ptr());
                    kb::submit_bio(bio.as_ptr());
                }
                bio = next;
            }
            sector += u64::from(seg.len >> 9);
        }
        // SAFETY: the last bio is owned here; after `submit_bio` or
        // `bio_endio` the block layer owns it and calls `end_io` once.
        unsafe {
            let last = bio.as_ptr();
            (*last).bi_private = private;
            (*last).bi_end_io = Some(end_io);
            // No segment at all (a zero-length transfer): nothing to send
            // to the device, but `end_io` must still run once, or the
            // command would never complete.
            let empty = (*last).bi_vcnt == 0;
            if status == blk::OK && !empty {
                kb::submit_bio(last);
            } else {
                (*last).bi_status = status;
                kb::bio_endio(last);
            }
            kb::blk_finish_plug(&mut plug);
        }
        Ok(())
    }

    /// Submits a discard (`zero == false`) or a write of zeroes that keeps
    /// the blocks allocated (`zero`) of `nr_sects` 512-byte sectors at
    /// `sector`, as chained bios, without waiting; `end_io` runs once with
    /// `private` after all of them completed (with NOTSUPP status if the
    /// device can do neither). Sleeps to allocate bios (process context).
    pub(crate) fn submit_range(
        self,
        zero: bool,
        sector: u64,
        nr_sects: u64,
        private: *mut c_void,
        end_io: unsafe extern "C" fn(*mut kb::bio),
    ) -> Result {
        let mut bio: *mut kb::bio = core::ptr::null_mut();
        let mut plug = kb::blk_plug::default();
        // SAFETY: `plug` lives on this stack frame until `blk_finish_plug`.
        unsafe { kb::blk_start_plug(&mut plug) };
        let r = if zero {
            // SAFETY: an open block device; `bio` receives the last bio of
            // the chain (the earlier ones are submitted), owned here.
            unsafe {
                kb::__blkdev_issue_zeroout(
                    self.block_device(),
                    sector,
                    nr_sects,
                    kb::GFP_KERNEL,
                    &mut bio,
                    kb::BLKDEV_ZERO_NOUNMAP,
                )
            }
        } else {
            // SAFETY: as above.
            unsafe { kb::__blkdev_issue_discard(self.block_device(), sector, nr_sects, kb::GFP_KERNEL, &mut bio) };
            0
        };
        let mut status = if r == 0 { blk::OK } else { blk::IOERR };
        let last = match NonNull::new(bio) {
            Some(b) => b,
            None => {
                // Nothing was built: the device does not discard (or the
                // range was empty). `end_io` still runs once.
                status = if nr_sects == 0 { blk::OK } else { blk::NOTSUPP };
                match self.alloc(0, OP_WRITE) {
                    Some(b) => b,
                    None => {
                        // SAFETY: started above.
                        unsafe { kb::blk_finish_plug(&mut plug) };
                        return Err(ENOMEM);
                    }
                }
            }
        };
        // SAFETY: the last bio is owned here; after `submit_bio` or
        // `bio_endio` the block layer owns it and calls `end_io` once,
        // after the bios chained to it.
        unsafe {
            let last = last.as_ptr();
            (*last).bi_private = private;
            (*last).bi_end_io = Some(end_io);
            if status == blk::OK && !bio.is_null() {
                kb::submit_bio(last);
            } else {
                (*last).bi_status = status;
                kb::bio_endio(last);
            }
            kb::blk_finish_plug(&mut plug);
        }
        Ok(())
    }

    /// Submits a cache flush; `end_io` runs once with `private`.
    pub(crate) fn flush(self, private: *mut c_void, end_io: unsafe extern "C" fn(*mut kb::bio)) -> Result {
        let bio = self.alloc(0, OP_WRITE | PREFLUSH).ok_or(ENOMEM)?;
        // SAFETY: a new bio owned here, handed to the block layer.
        unsafe {
            (*bio.as_ptr()).bi_private = private;
            (*bio.as_ptr()).bi_end_io = Some(end_io);
            kb::submit_bio(bio.as_ptr());
        }
        Ok(())
    }
}

/// What a completed bio carries back: its status, whether it wrote, and the
/// caller's private pointer. Releases the bio.
///
/// # Safety
/// `bio` must be a completed bio of ours, passed to its `bi_end_io`.
pub(crate) unsafe fn finish(bio: *mut kb::bio) -> (u8, bool, *mut c_void) {
    // SAFETY: per the contract, a live bio whose last reference we drop.
    unsafe {
        let r = ((*bio).bi_status, op_is_write((*bio).bi_opf), (*bio).bi_private);
        kb::bio_put(bio);
        r
    }
}

/// Issues a discard of `nr_sects` 512-byte sectors at `sector` (waits).
pub(crate) fn discard(dev: Bdev, sector: u64, nr_sects: u64) -> Result {
    // SAFETY: an open block device; the call sleeps, and LIO runs
    // `execute_unmap` in process context.
    let r = unsafe { kb::blkdev_issue_discard(dev.block_device(), sector, nr_sects, kb::GFP_KERNEL) };
    kernel::error::to_result(r)
}

/// Writes zeroes to `nr_sects` sectors at `sector` without deallocating
/// (waits).
pub(crate) fn zeroout(dev: Bdev, sector: u64, nr_sects: u64) -> Result {
    // SAFETY: as in `discard`.
    let r = unsafe {
        kb::blkdev_issue_zeroout(dev.block_device(), sector, nr_sects, kb::GFP_KERNEL, kb::BLKDEV_ZERO_NOUNMAP)
    };
    kernel::error::to_result(r)
}

/// Repeats one segment `n` times (WRITE SAME).
pub(crate) fn repeat(seg: Seg, n: u64) -> impl Iterator<Item = Seg> {
    core::iter::repeat_n(seg, usize::try_from(n).unwrap_or(usize::MAX))
}
