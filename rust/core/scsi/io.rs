// SPDX-License-Identifier: GPL-2.0

//! How a block-layer completion becomes a SCSI completion.
//!
//! The data path submits bios and hands the final `blk_status_t` here. The
//! mapping follows FreeBSD CTL's block backend: a failed transfer is a MEDIUM
//! ERROR (unrecovered read error for reads, write error for writes), an
//! unsupported request is an invalid opcode, no space is the thin-provisioning
//! write-protect, a reservation conflict from a PR-aware device is
//! RESERVATION CONFLICT, and a transient lack of resources is BUSY so the
//! initiator retries.

use super::sense::{Sense, SenseKey};

/// `blk_status_t` codes (include/linux/blk_types.h), as numbers: the header
/// defines them as casts that bindgen cannot evaluate.
pub(crate) mod blk {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// Operation not supported.
    pub(crate) const NOTSUPP: u8 = 1;
    /// No space left.
    pub(crate) const NOSPC: u8 = 3;
    /// Reservation conflict.
    pub(crate) const RESV_CONFLICT: u8 = 6;
    /// Medium error.
    pub(crate) const MEDIUM: u8 = 7;
    /// Out of resources, retry.
    pub(crate) const RESOURCE: u8 = 9;
    /// IO error.
    pub(crate) const IOERR: u8 = 10;
    /// Would block, retry.
    pub(crate) const AGAIN: u8 = 12;
    /// Device out of resources, retry.
    pub(crate) const DEV_RESOURCE: u8 = 13;
}

/// DATA PROTECT, 27h/07h: space allocation failed write protect.
pub(crate) const SPACE_ALLOCATION_FAILED: Sense = Sense::new(SenseKey::DataProtect, 0x27, 0x07);

/// The SCSI outcome of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// GOOD.
    Good,
    /// BUSY: the initiator retries.
    Busy,
    /// RESERVATION CONFLICT.
    ReservationConflict,
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

/// The completion for block status `status` of a read (`write == false`) or
/// write. Unknown codes are treated as a failed transfer.
pub(crate) fn from_blk_status(status: u8, write: bool) -> Completion {
    match status {
        blk::OK => Completion::Good,
        blk::RESV_CONFLICT => Completion::ReservationConflict,
        blk::RESOURCE | blk::AGAIN | blk::DEV_RESOURCE => Completion::Busy,
        blk::NOTSUPP => Completion::Check(Sense::INVALID_OPCODE),
        blk::NOSPC if write => Completion::Check(SPACE_ALLOCATION_FAILED),
        _ if write => Completion::Check(Sense::WRITE_ERROR),
        _ => Completion::Check(Sense::UNRECOVERED_READ_ERROR),
    }
}

/// Whether `data` is all zero bytes (WRITE SAME of zeroes can use the
/// device's write-zeroes offload).
pub(crate) fn all_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// The last LBA of a device of `sectors` 512-byte sectors in blocks of
/// `block_size` bytes (READ CAPACITY semantics; 0 for an empty device).
pub(crate) fn last_lba(sectors: u64, block_size: u32) -> u64 {
    let per_block = u64::from(block_size / 512).max(1);
    (sectors / per_block).saturating_sub(1)
}

/// COMPARE AND WRITE whose 8-bit NUMBER OF LOGICAL BLOCKS is 0 while data
/// is sent: the initiator meant more blocks than the field holds (256 wraps to
/// 0), more than the MAXIMUM COMPARE AND WRITE LENGTH we report. LIO's size
/// check would call it an invalid information unit; the field at fault is the
/// CDB's, so the backstore answers INVALID FIELD IN CDB.
pub(crate) fn caw_without_blocks(cdb: &[u8], data_length: usize) -> bool {
    cdb.first() == Some(&super::opcode::COMPARE_AND_WRITE)
        && cdb.get(13) == Some(&0)
        && data_length != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lba_of_sizes() {
        assert_eq!(last_lba(524288, 512), 524287);
        assert_eq!(last_lba(524288, 4096), 65535);
        assert_eq!(last_lba(0, 512), 0);
    }

    #[test]
    fn success_and_retryable() {
        assert_eq!(from_blk_status(blk::OK, false), Completion::Good);
        assert_eq!(from_blk_status(blk::OK, true), Completion::Good);
        for s in [blk::RESOURCE, blk::AGAIN, blk::DEV_RESOURCE] {
            assert_eq!(from_blk_status(s, true), Completion::Busy);
        }
        assert_eq!(from_blk_status(blk::RESV_CONFLICT, true), Completion::ReservationConflict);
    }

    #[test]
    fn failures_are_medium_errors_by_direction() {
        // BLK_STS_IOERR (10), TIMEOUT (2), TRANSPORT (4), MEDIUM, OFFLINE (16)
        // and an unknown code.
        for s in [10u8, 2, 4, blk::MEDIUM, 16, 200] {
            assert_eq!(from_blk_status(s, false), Completion::Check(Sense::UNRECOVERED_READ_ERROR), "{s}");
            assert_eq!(from_blk_status(s, true), Completion::Check(Sense::WRITE_ERROR), "{s}");
        }
        assert_eq!(from_blk_status(blk::NOTSUPP, true), Completion::Check(Sense::INVALID_OPCODE));
        assert_eq!(from_blk_status(blk::NOSPC, true), Completion::Check(SPACE_ALLOCATION_FAILED));
        assert_eq!(from_blk_status(blk::NOSPC, false), Completion::Check(Sense::UNRECOVERED_READ_ERROR));
    }

    #[test]
    fn zero_detection() {
        assert!(all_zero(&[0; 512]));
        assert!(all_zero(&[]));
        let mut b = [0u8; 512];
        b[511] = 1;
        assert!(!all_zero(&b));
    }

    #[test]
    fn caw_with_wrapped_block_count() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x89;
        assert!(caw_without_blocks(&cdb, 2 * 256 * 512));
        assert!(!caw_without_blocks(&cdb, 0));
        cdb[13] = 1;
        assert!(!caw_without_blocks(&cdb, 1024));
        cdb[0] = 0x8a;
        cdb[13] = 0;
        assert!(!caw_without_blocks(&cdb, 1024));
        assert!(!caw_without_blocks(&[], 1024));
    }
}
