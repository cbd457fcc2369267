// SPDX-License-Identifier: GPL-2.0

//! SCSI emulation owned by the `ha` backstore (plain Rust).
//!
//! With `TRANSPORT_FLAG_PASSTHROUGH_ALUA` and `_PGR` set, LIO leaves ALUA,
//! INQUIRY's TPGS bits, VPD 0x83's port group designator, REPORT TARGET PORT
//! GROUPS and persistent reservations to the backstore
//! (lio-and-rust-for-linux-7.3.md §A.2, §A.5). This module holds that logic
//! with no kernel types so it runs in `cargo test`:
//!
//! * [`sense`]: sense data (fixed and descriptor format) and the reasons used;
//! * [`alua`]: access states, CTL's per-state allowed commands and its state
//!   table;
//! * [`inquiry`]: standard INQUIRY, VPD pages, REPORT TARGET PORT GROUPS;
//! * [`mode`]: MODE SENSE and MODE SELECT (mode pages of a disk LUN);
//! * [`order`]: ordering of the two nodes' IO on shared storage (mode 1);
//! * [`pr`]: SPC-4 persistent reservations and their snapshot encoding.
//!
//! Every builder writes into a caller-supplied buffer, truncating to it, and
//! reports the untruncated length (SCSI allocation-length semantics).

pub(crate) mod alua;
pub(crate) mod inquiry;
pub(crate) mod io;
pub(crate) mod mode;
pub(crate) mod nexus;
pub(crate) mod opcode;
pub(crate) mod order;
pub(crate) mod out;
pub(crate) mod pr;
pub(crate) mod sense;

/// SCSI status GOOD.
pub(crate) const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION (sense data follows).
pub(crate) const STATUS_CHECK_CONDITION: u8 = 0x02;
/// SCSI status BUSY.
pub(crate) const STATUS_BUSY: u8 = 0x08;
/// SCSI status RESERVATION CONFLICT.
pub(crate) const STATUS_RESERVATION_CONFLICT: u8 = 0x18;

/// Result of a data-in command emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DataIn {
    /// Bytes written at the start of the caller's buffer: the untruncated
    /// response clipped to the CDB's allocation length and to the buffer.
    /// This is the amount to transfer.
    pub(crate) len: usize,
    /// Untruncated length of the response.
    pub(crate) full: usize,
}

impl DataIn {
    /// A response of `full` bytes built into a buffer of `buf_len` bytes for a
    /// CDB allowing `alloc_len` bytes.
    pub(crate) fn new(full: usize, alloc_len: usize, buf_len: usize) -> DataIn {
        DataIn {
            len: full.min(alloc_len).min(buf_len),
            full,
        }
    }
}

/// Reads a big-endian `u16` at `at` in `b`, or `None` when `b` is too short.
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    let s = b.get(at..end)?;
    let mut a = [0u8; 2];
    a.copy_from_slice(s);
    Some(u16::from_be_bytes(a))
}

/// Reads a big-endian `u32` at `at` in `b`, or `None` when `b` is too short.
pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let s = b.get(at..end)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_be_bytes(a))
}

/// Reads a big-endian `u64` at `at` in `b`, or `None` when `b` is too short.
pub(crate) fn be64(b: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let s = b.get(at..end)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

/// Byte `at` of `b`, or 0 when `b` is shorter (absent CDB bytes read as 0).
pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_bounds_checked() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(be16(&b, 0), Some(0x0102));
        assert_eq!(be16(&b, 8), None);
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(be32(&b, 5), Some(0x06070809));
        assert_eq!(be32(&b, 6), None);
        assert_eq!(be64(&b, 1), Some(0x0203040506070809));
        assert_eq!(be64(&b, 2), None);
        assert_eq!(byte(&b, 8), 9);
        assert_eq!(byte(&b, 9), 0);
    }

    #[test]
    fn data_in_clips() {
        assert_eq!(DataIn::new(100, 36, 4096), DataIn { len: 36, full: 100 });
        assert_eq!(DataIn::new(10, 36, 4096), DataIn { len: 10, full: 10 });
        assert_eq!(DataIn::new(100, 200, 50), DataIn { len: 50, full: 100 });
    }
}
