// SPDX-License-Identifier: GPL-2.0

//! MODE SENSE(6)/(10) and MODE SELECT(6)/(10) for a disk LUN (SPC-4 §6.11,
//! §6.13, §7.5; SBC-3 §6.4).
//!
//! The backstore reports four mode pages: read-write error recovery (01h),
//! caching (08h), control (0Ah) and informational exceptions (1Ch). Only
//! WCE in the caching page is changeable; nothing can be saved. The caller
//! gathers the values into [`ModeParams`]; [`mode_sense`] builds the mode
//! parameter data and [`mode_select`] checks a parameter list against the
//! current values and returns the WCE it asks for, changing nothing itself.

use super::opcode::{MODE_SELECT_10, MODE_SELECT_6, MODE_SENSE_10, MODE_SENSE_6};
use super::out::{sat16, Out};
use super::sense::Sense;
use super::{be16, be32, be64, byte, DataIn};

/// Mode page codes reported here.
pub(crate) mod page {
    /// Read-write error recovery.
    pub(crate) const RW_ERROR_RECOVERY: u8 = 0x01;
    /// Caching.
    pub(crate) const CACHING: u8 = 0x08;
    /// Control.
    pub(crate) const CONTROL: u8 = 0x0A;
    /// Informational exceptions control.
    pub(crate) const INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
    /// Return all mode pages (MODE SENSE only).
    pub(crate) const ALL: u8 = 0x3F;
}

/// Subpage code asking for all subpages (MODE SENSE only, with
/// [`page::ALL`]).
pub(crate) const ALL_SUBPAGES: u8 = 0xFF;

/// The pages reported, in ascending order (what [`page::ALL`] returns).
pub(crate) const PAGES: [u8; 4] = [
    page::RW_ERROR_RECOVERY,
    page::CACHING,
    page::CONTROL,
    page::INFORMATIONAL_EXCEPTIONS,
];

/// Longest page built here (the caching page), header included.
pub(crate) const PAGE_MAX_LEN: usize = 20;

/// WCE bit of the caching page's byte 2.
pub(crate) const CACHING_WCE: u8 = 0x04;

/// Length of a short (8-byte) mode parameter block descriptor.
pub(crate) const SHORT_DESCRIPTOR_LEN: usize = 8;

/// Length of a long LBA (16-byte) mode parameter block descriptor.
pub(crate) const LONG_DESCRIPTOR_LEN: usize = 16;

/// Control page byte 3: QUEUE ALGORITHM MODIFIER 1h, unrestricted
/// reordering of SIMPLE commands allowed (LIO's default too).
const CONTROL_QAM_UNRESTRICTED: u8 = 0x10;
/// Control page byte 5: TAS.
const CONTROL_TAS: u8 = 0x40;
/// Control page BUSY TIMEOUT PERIOD: unlimited.
const CONTROL_BUSY_TIMEOUT: u16 = 0xFFFF;

/// Device-specific parameter: WP (write protected).
const DSP_WP: u8 = 0x80;
/// Device-specific parameter: DPOFUA (DPO and FUA supported).
const DSP_DPOFUA: u8 = 0x10;

/// What the pages report, gathered by the caller from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModeParams {
    /// Current WCE (caching page).
    pub(crate) wce: bool,
    /// The backing device's write cache at configure time: WCE among the
    /// default values (PC = 2).
    pub(crate) wce_default: bool,
    /// WP bit (bit 7) of the header's device-specific parameter.
    pub(crate) read_only: bool,
    /// The device supports FUA: DPOFUA (bit 4) of the device-specific
    /// parameter, reported whatever WCE is.
    pub(crate) fua: bool,
    /// TAS bit of the control page (byte 5 bit 6).
    pub(crate) tas: bool,
    /// Number of logical blocks.
    pub(crate) blocks: u64,
    /// Logical block length in bytes.
    pub(crate) block_size: u32,
}

/// Which values a page is built with (the PC field of MODE SENSE, saved
/// values excepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageControl {
    /// 00b: current values.
    Current,
    /// 01b: changeable values (a mask of the bits MODE SELECT may change).
    Changeable,
    /// 10b: default values.
    Default,
}

/// Appends page `code` with `pc` values; `false` (and nothing written) for
/// a page not reported here.
fn write_page(o: &mut Out<'_>, code: u8, pc: PageControl, p: &ModeParams) -> bool {
    let mask = pc == PageControl::Changeable;
    match code {
        page::RW_ERROR_RECOVERY => {
            o.u8(page::RW_ERROR_RECOVERY);
            o.u8(0x0A);
            // Retries and recovery are the backing device's business:
            // nothing to report, nothing changeable.
            o.zeros(10);
        }
        page::CACHING => {
            o.u8(page::CACHING);
            o.u8(0x12);
            let wce = match pc {
                PageControl::Current => p.wce,
                PageControl::Changeable => true,
                PageControl::Default => p.wce_default,
            };
            // RCD = 0, MF = 0; the rest of the page is zero.
            o.u8(if wce { CACHING_WCE } else { 0 });
            o.zeros(17);
        }
        page::CONTROL => {
            o.u8(page::CONTROL);
            o.u8(0x0A);
            if mask {
                o.zeros(10);
            } else {
                o.u8(0); // TST 000b, TMF_ONLY 0, DPICZ 0, D_SENSE 0, GLTSD 0, RLEC 0
                o.u8(CONTROL_QAM_UNRESTRICTED); // NUAR 0, QERR 00b
                o.u8(0); // RAC 0, UA_INTLCK_CTRL 00b, SWP 0
                o.u8(if p.tas { CONTROL_TAS } else { 0 }); // ATO 0, ATMPE 0, RWWP 0
                o.zeros(2); // obsolete
                o.be16(CONTROL_BUSY_TIMEOUT);
                o.be16(0); // extended self-test completion time
            }
        }
        page::INFORMATIONAL_EXCEPTIONS => {
            o.u8(page::INFORMATIONAL_EXCEPTIONS);
            o.u8(0x0A);
            o.zeros(10);
        }
        _ => return false,
    }
    true
}

/// Page `code` with `pc` values and its length (header included), or
/// `None` for a page not reported here.
pub(crate) fn page_bytes(
    code: u8,
    pc: PageControl,
    p: &ModeParams,
) -> Option<([u8; PAGE_MAX_LEN], usize)> {
    let mut a = [0u8; PAGE_MAX_LEN];
    let mut o = Out::new(&mut a);
    if !write_page(&mut o, code, pc, p) {
        return None;
    }
    let n = o.len();
    Some((a, n))
}

/// NUMBER OF LOGICAL BLOCKS of a short block descriptor: `p.blocks`, or
/// FFFF_FFFFh when it does not fit.
fn short_blocks(p: &ModeParams) -> u32 {
    u32::try_from(p.blocks).unwrap_or(u32::MAX)
}

/// LOGICAL BLOCK LENGTH of a short block descriptor (3 bytes; saturates,
/// although no real block length comes near).
fn short_block_len(p: &ModeParams) -> u32 {
    p.block_size.min(0x00FF_FFFF)
}

/// The device-specific parameter of the mode parameter header.
fn device_specific(p: &ModeParams) -> u8 {
    let mut v = 0;
    if p.read_only {
        v |= DSP_WP;
    }
    if p.fua {
        v |= DSP_DPOFUA;
    }
    v
}

/// A field pointer into the parameter list at `at` (offsets past 64 KiB,
/// impossible for MODE SELECT, saturate).
fn param_field(at: usize, bit: u8) -> Sense {
    Sense::invalid_param_field(u16::try_from(at).unwrap_or(u16::MAX), Some(bit))
}

/// Handles MODE SENSE(6) and MODE SENSE(10): checks the CDB and builds the
/// mode parameter header, the block descriptor (unless DBD) and the
/// requested page(s) into `buf`, clipped to the allocation length.
///
/// The header and the block descriptor always hold current values; PC
/// selects the values of the pages. With LLBAA (10-byte CDB only) the block
/// descriptor is the 16-byte long LBA form and LONGLBA is set.
///
/// Refusals: an opcode other than 1Ah/5Ah (INVALID COMMAND OPERATION
/// CODE); a CDB shorter than its opcode's size (byte 0); a page not
/// reported here (byte 2 bit 5); a subpage other than 00h, or than 00h and
/// FFh for page 3Fh (byte 3); PC = 11b (SAVING PARAMETERS NOT SUPPORTED).
pub(crate) fn mode_sense(cdb: &[u8], p: &ModeParams, buf: &mut [u8]) -> Result<DataIn, Sense> {
    let ten = match cdb.first().copied() {
        Some(MODE_SENSE_6) => false,
        Some(MODE_SENSE_10) => true,
        _ => return Err(Sense::INVALID_OPCODE),
    };
    if cdb.len() < if ten { 10 } else { 6 } {
        return Err(Sense::invalid_cdb_field(0, None));
    }
    let b1 = byte(cdb, 1);
    let dbd = b1 & 0x08 != 0;
    let llbaa = ten && b1 & 0x10 != 0;
    let b2 = byte(cdb, 2);
    let code = b2 & 0x3F;
    let sub = byte(cdb, 3);
    let alloc = if ten {
        usize::from(be16(cdb, 7).unwrap_or(0))
    } else {
        usize::from(byte(cdb, 4))
    };
    if code == page::ALL {
        if sub != 0 && sub != ALL_SUBPAGES {
            return Err(Sense::invalid_cdb_field(3, Some(7)));
        }
    } else if !PAGES.contains(&code) {
        return Err(Sense::invalid_cdb_field(2, Some(5)));
    } else if sub != 0 {
        return Err(Sense::invalid_cdb_field(3, Some(7)));
    }
    let pc = match b2 >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED),
    };

    let buf_len = buf.len();
    let out = buf.get_mut(..alloc.min(buf_len)).unwrap_or(&mut []);
    let mut o = Out::new(out);
    let desc_len = match (dbd, llbaa) {
        (true, _) => 0,
        (false, false) => SHORT_DESCRIPTOR_LEN,
        (false, true) => LONG_DESCRIPTOR_LEN,
    };
    let long = desc_len == LONG_DESCRIPTOR_LEN;
    // Header; the mode data length is set at the end.
    if ten {
        o.be16(0);
        o.u8(0); // medium type
        o.u8(device_specific(p));
        o.u8(u8::from(long)); // LONGLBA
        o.u8(0);
        o.be16(sat16(desc_len));
    } else {
        o.u8(0);
        o.u8(0); // medium type
        o.u8(device_specific(p));
        o.u8(u8::try_from(desc_len).unwrap_or(u8::MAX));
    }
    if long {
        o.be64(p.blocks);
        o.be32(0); // reserved
        o.be32(p.block_size);
    } else if desc_len != 0 {
        o.be32(short_blocks(p));
        o.u8(0); // density code
        let [_, a, b, c] = short_block_len(p).to_be_bytes();
        o.bytes(&[a, b, c]);
    }
    for c in PAGES {
        if code == page::ALL || code == c {
            write_page(&mut o, c, pc, p);
        }
    }
    let full = o.len();
    if ten {
        o.set_be16(0, sat16(full.saturating_sub(2)));
    } else {
        o.set(0, u8::try_from(full.saturating_sub(1)).unwrap_or(u8::MAX));
    }
    Ok(DataIn::new(full, alloc, buf_len))
}

/// Parameter list length of a MODE SELECT CDB (6: byte 4; 10: bytes 7-8),
/// `None` for other opcodes or a CDB too short to hold the field.
pub(crate) fn select_param_len(cdb: &[u8]) -> Option<usize> {
    match cdb.first().copied()? {
        MODE_SELECT_6 => cdb.get(4).copied().map(usize::from),
        MODE_SELECT_10 => be16(cdb, 7).map(usize::from),
        _ => None,
    }
}

/// Checks a block descriptor at `at` in `list` (known to hold `len` bytes
/// there) against the current geometry: NUMBER OF LOGICAL BLOCKS equal to
/// the one MODE SENSE reports, or 0 ("unchanged"); density code and
/// reserved bytes 0; LOGICAL BLOCK LENGTH equal to the current one.
fn check_descriptor(list: &[u8], at: usize, long: bool, p: &ModeParams) -> Result<(), Sense> {
    let off = |n: usize| at.saturating_add(n);
    if long {
        let blocks = be64(list, at).unwrap_or(0);
        if blocks != 0 && blocks != p.blocks {
            return Err(param_field(at, 7));
        }
        // Byte 8 (density code in SPC-4, reserved in SBC-3) and 9-11
        // (reserved): the first non-zero one.
        for i in 8..12 {
            if byte(list, off(i)) != 0 {
                return Err(param_field(off(i), 7));
            }
        }
        if be32(list, off(12)).unwrap_or(0) != p.block_size {
            return Err(param_field(off(12), 7));
        }
    } else {
        let blocks = be32(list, at).unwrap_or(0);
        if blocks != 0 && blocks != short_blocks(p) {
            return Err(param_field(at, 7));
        }
        if byte(list, off(4)) != 0 {
            return Err(param_field(off(4), 7));
        }
        let len = be32(list, off(4)).unwrap_or(0) & 0x00FF_FFFF;
        if len != short_block_len(p) {
            return Err(param_field(off(5), 7));
        }
    }
    Ok(())
}

/// Position (0..=7) of the highest set bit of a non-zero byte (0 for 0).
fn highest_bit(v: u8) -> u8 {
    u8::try_from(7u32.saturating_sub(v.leading_zeros())).unwrap_or(0)
}

/// Validates a MODE SELECT parameter list against `p` and returns the new
/// WCE.
///
/// `params` is the data the caller transferred; only its first parameter
/// list length bytes (from the CDB) are looked at. The mode data length and
/// the device-specific parameter of the header are ignored; the medium type
/// must be 0. A block descriptor (short, or long when LONGLBA is set in a
/// 10-byte list) must restate the current geometry. Each page must be one
/// of [`PAGES`], with SPF clear and its exact page length, and may differ
/// from the current values only in changeable bits (WCE); PS is ignored.
/// The WCE of the last caching page wins; with none, `p.wce` is returned.
///
/// Refusals: an opcode other than 15h/55h (INVALID COMMAND OPERATION
/// CODE); a CDB shorter than its opcode's size (byte 0); PF clear (byte 1
/// bit 4); SP set (byte 1 bit 0); a list shorter than its header, block
/// descriptor or a page (PARAMETER LIST LENGTH ERROR); any other mismatch
/// is INVALID FIELD IN PARAMETER LIST pointing at the offending byte of the
/// list (the first differing byte and its highest differing bit for page
/// contents).
pub(crate) fn mode_select(cdb: &[u8], params: &[u8], p: &ModeParams) -> Result<bool, Sense> {
    let ten = match cdb.first().copied() {
        Some(MODE_SELECT_6) => false,
        Some(MODE_SELECT_10) => true,
        _ => return Err(Sense::INVALID_OPCODE),
    };
    if cdb.len() < if ten { 10 } else { 6 } {
        return Err(Sense::invalid_cdb_field(0, None));
    }
    let b1 = byte(cdb, 1);
    if b1 & 0x10 == 0 {
        return Err(Sense::invalid_cdb_field(1, Some(4)));
    }
    if b1 & 0x01 != 0 {
        return Err(Sense::invalid_cdb_field(1, Some(0)));
    }
    let len = select_param_len(cdb).unwrap_or(0);
    if len == 0 {
        return Ok(p.wce);
    }
    let list = params.get(..len).unwrap_or(params);

    let (hlen, medium_at, desc_len_at) = if ten { (8, 2, 6) } else { (4, 1, 3) };
    if list.len() < hlen {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if byte(list, medium_at) != 0 {
        return Err(param_field(medium_at, 7));
    }
    let long = ten && byte(list, 4) & 0x01 != 0;
    let desc_len = if ten {
        usize::from(be16(list, desc_len_at).unwrap_or(0))
    } else {
        usize::from(byte(list, desc_len_at))
    };
    let want = if long {
        LONG_DESCRIPTOR_LEN
    } else {
        SHORT_DESCRIPTOR_LEN
    };
    if desc_len != 0 && desc_len != want {
        return Err(param_field(desc_len_at, 7));
    }
    let pages_at = hlen.saturating_add(desc_len);
    if list.len() < pages_at {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    if desc_len != 0 {
        check_descriptor(list, hlen, long, p)?;
    }

    let mut wce = p.wce;
    let mut at = pages_at;
    while at < list.len() {
        let h = byte(list, at);
        if h & 0x40 != 0 {
            return Err(param_field(at, 6));
        }
        let code = h & 0x3F;
        let (Some((cur, n)), Some((mask, _))) = (
            page_bytes(code, PageControl::Current, p),
            page_bytes(code, PageControl::Changeable, p),
        ) else {
            return Err(param_field(at, 5));
        };
        let len_at = at.saturating_add(1);
        let Some(&page_len) = list.get(len_at) else {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        };
        if usize::from(page_len).saturating_add(2) != n {
            return Err(param_field(len_at, 7));
        }
        let end = at.saturating_add(n);
        let Some(pg) = list.get(at..end) else {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        };
        for i in 2..n {
            let diff = (byte(pg, i) ^ byte(&cur, i)) & !byte(&mask, i);
            if diff != 0 {
                return Err(param_field(at.saturating_add(i), highest_bit(diff)));
            }
        }
        if code == page::CACHING {
            wce = byte(pg, 2) & CACHING_WCE != 0;
        }
        at = end;
    }
    Ok(wce)
}

/// Whether a node holding mode parameters `local` (generation, WCE)
/// takes the peer's `peer`: a higher generation wins (each MODE SELECT
/// that changed them bumps it); at equal generations the values of the
/// LUN's primary do, so that both nodes end up with the same.
pub(crate) fn adopt(local: (u32, bool), peer: (u32, bool), peer_primary: bool) -> bool {
    peer != local && (peer.0 > local.0 || (peer.0 == local.0 && peer_primary))
}

#[cfg(test)]
mod tests {
    use super::super::sense::Sks;
    use super::*;
    use std::vec::Vec;

    fn params() -> ModeParams {
        ModeParams {
            wce: true,
            wce_default: false,
            read_only: false,
            fua: true,
            tas: true,
            blocks: 0x0020_0000,
            block_size: 512,
        }
    }

    /// A MODE SENSE CDB: `ten` picks the size; `flags` is byte 1 (DBD,
    /// LLBAA); `pc`, `code`, `sub` and `alloc` as named.
    fn sense_cdb(ten: bool, flags: u8, pc: u8, code: u8, sub: u8, alloc: u16) -> Vec<u8> {
        let b2 = (pc << 6) | code;
        if ten {
            let [h, l] = alloc.to_be_bytes();
            std::vec![MODE_SENSE_10, flags, b2, sub, 0, 0, 0, h, l, 0]
        } else {
            let a = u8::try_from(alloc).unwrap_or(u8::MAX);
            std::vec![MODE_SENSE_6, flags, b2, sub, a, 0]
        }
    }

    /// A MODE SELECT CDB with byte 1 `flags` and list length `len`.
    fn select_cdb(ten: bool, flags: u8, len: usize) -> Vec<u8> {
        if ten {
            let [h, l] = u16::try_from(len).unwrap().to_be_bytes();
            std::vec![MODE_SELECT_10, flags, 0, 0, 0, 0, 0, h, l, 0]
        } else {
            std::vec![MODE_SELECT_6, flags, 0, 0, u8::try_from(len).unwrap(), 0]
        }
    }

    fn sense(cdb: &[u8], p: &ModeParams) -> Result<Vec<u8>, Sense> {
        let mut b = [0u8; 512];
        let r = mode_sense(cdb, p, &mut b)?;
        assert_eq!(r.len, r.full.min(b.len()));
        Ok(b[..r.len].to_vec())
    }

    fn select(ten: bool, list: &[u8], p: &ModeParams) -> Result<bool, Sense> {
        mode_select(&select_cdb(ten, 0x10, list.len()), list, p)
    }

    fn hlen(ten: bool) -> usize {
        if ten {
            8
        } else {
            4
        }
    }

    fn page(code: u8, pc: PageControl, p: &ModeParams) -> Vec<u8> {
        let (a, n) = page_bytes(code, pc, p).unwrap();
        a[..n].to_vec()
    }

    #[test]
    fn saving_parameters_sense_code() {
        let s = Sense::SAVING_PARAMETERS_NOT_SUPPORTED;
        assert_eq!((s.key as u8, s.asc, s.ascq), (5, 0x39, 0x00));
    }

    #[test]
    fn page_contents() {
        let p = params();
        let cur = PageControl::Current;
        let chg = PageControl::Changeable;
        let def = PageControl::Default;
        let mut rw = std::vec![0u8; 12];
        rw[0] = 0x01;
        rw[1] = 0x0A;
        assert_eq!(page(0x01, cur, &p), rw);
        assert_eq!(page(0x01, def, &p), rw);
        assert_eq!(page(0x01, chg, &p)[2..], [0u8; 10]);

        let mut caching = std::vec![0u8; 20];
        caching[0] = 0x08;
        caching[1] = 0x12;
        caching[2] = 0x04;
        assert_eq!(page(0x08, cur, &p), caching);
        assert_eq!(page(0x08, chg, &p), caching, "only WCE changeable");
        caching[2] = 0;
        assert_eq!(page(0x08, def, &p), caching, "default is wce_default");
        let q = ModeParams { wce: false, ..p };
        assert_eq!(page(0x08, cur, &q), caching);

        let control = std::vec![0x0A, 0x0A, 0, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0];
        assert_eq!(page(0x0A, cur, &p), control);
        assert_eq!(page(0x0A, def, &p), control);
        let q = ModeParams { tas: false, ..p };
        assert_eq!(page(0x0A, cur, &q)[5], 0);
        assert_eq!(page(0x0A, chg, &p)[..2], [0x0A, 0x0A]);
        assert_eq!(page(0x0A, chg, &p)[2..], [0u8; 10]);

        let mut ie = std::vec![0u8; 12];
        ie[0] = 0x1C;
        ie[1] = 0x0A;
        for pc in [cur, chg, def] {
            assert_eq!(page(0x1C, pc, &p), ie);
        }
        assert!(page_bytes(0x02, cur, &p).is_none());
        assert!(page_bytes(0x3F, cur, &p).is_none());
        for c in PAGES {
            assert!(page(c, cur, &p).len() <= PAGE_MAX_LEN);
        }
    }

    #[test]
    fn every_page_and_pc_both_sizes() {
        let p = params();
        let pcs = [
            (0u8, PageControl::Current),
            (1, PageControl::Changeable),
            (2, PageControl::Default),
        ];
        for ten in [false, true] {
            for (pc, kind) in pcs {
                for code in PAGES {
                    for dbd in [false, true] {
                        let flags = if dbd { 0x08 } else { 0 };
                        let d = sense(&sense_cdb(ten, flags, pc, code, 0, 255), &p).unwrap();
                        let h = hlen(ten);
                        let bd = if dbd { 0 } else { 8 };
                        let want = page(code, kind, &p);
                        assert_eq!(d.len(), h + bd + want.len(), "{ten} {pc} {code:#x} {dbd}");
                        assert_eq!(d[h + bd..], want[..]);
                        if ten {
                            assert_eq!(usize::from(be16(&d, 0).unwrap()), d.len() - 2);
                            assert_eq!(d[2], 0);
                            assert_eq!(d[3], 0x10);
                            assert_eq!(d[4], 0);
                            assert_eq!(usize::from(be16(&d, 6).unwrap()), bd);
                        } else {
                            assert_eq!(usize::from(d[0]), d.len() - 1);
                            assert_eq!(d[1], 0);
                            assert_eq!(d[2], 0x10);
                            assert_eq!(usize::from(d[3]), bd);
                        }
                        if !dbd {
                            assert_eq!(d[h..h + 8], [0, 0x20, 0, 0, 0, 0, 0x02, 0x00]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn all_pages_ascending() {
        let p = params();
        for ten in [false, true] {
            for sub in [0x00, 0xFF] {
                let d = sense(&sense_cdb(ten, 0x08, 0, 0x3F, sub, 255), &p).unwrap();
                let mut want = Vec::new();
                for c in PAGES {
                    want.extend(page(c, PageControl::Current, &p));
                }
                assert_eq!(d[hlen(ten)..], want[..]);
                let codes: Vec<u8> = {
                    let mut v = Vec::new();
                    let mut at = hlen(ten);
                    while at < d.len() {
                        v.push(d[at]);
                        at += usize::from(d[at + 1]) + 2;
                    }
                    v
                };
                assert_eq!(codes, PAGES);
            }
        }
        let d = sense(&sense_cdb(false, 0, 0, 0x3F, 0, 255), &p).unwrap();
        assert_eq!(d.len(), 4 + 8 + 12 + 20 + 12 + 12);
        assert_eq!(usize::from(d[0]), d.len() - 1);
    }

    #[test]
    fn long_descriptor() {
        let p = ModeParams {
            blocks: 0x1_2345_6789,
            block_size: 4096,
            ..params()
        };
        let d = sense(&sense_cdb(true, 0x10, 0, 0x08, 0, 255), &p).unwrap();
        assert_eq!(d[4], 0x01, "LONGLBA");
        assert_eq!(be16(&d, 6), Some(16));
        assert_eq!(
            d[8..24],
            [0, 0, 0, 1, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0, 0, 0, 0x10, 0]
        );
        assert_eq!(d[24], 0x08);
        assert_eq!(d.len(), 8 + 16 + 20);
        assert_eq!(usize::from(be16(&d, 0).unwrap()), d.len() - 2);
        // DBD wins over LLBAA: no descriptor, no LONGLBA.
        let d = sense(&sense_cdb(true, 0x18, 0, 0x08, 0, 255), &p).unwrap();
        assert_eq!(d[4], 0);
        assert_eq!(be16(&d, 6), Some(0));
        assert_eq!(d.len(), 8 + 20);
        // LLBAA is reserved in MODE SENSE(6): short descriptor.
        let d = sense(&sense_cdb(false, 0x10, 0, 0x08, 0, 255), &p).unwrap();
        assert_eq!(d[3], 8);
        assert_eq!(d.len(), 4 + 8 + 20);
    }

    #[test]
    fn short_descriptor_clamps_blocks() {
        let p = ModeParams {
            blocks: 0x1_0000_0000,
            block_size: 4096,
            ..params()
        };
        for ten in [false, true] {
            let d = sense(&sense_cdb(ten, 0, 0, 0x01, 0, 255), &p).unwrap();
            let h = hlen(ten);
            assert_eq!(d[h..h + 8], [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0]);
        }
        let p = ModeParams {
            blocks: 0xFFFF_FFFF,
            ..params()
        };
        let d = sense(&sense_cdb(false, 0, 0, 0x01, 0, 255), &p).unwrap();
        assert_eq!(d[4..8], [0xFF; 4]);
    }

    #[test]
    fn header_bits() {
        let cases = [
            (false, false, 0x00u8),
            (true, false, 0x80),
            (false, true, 0x10),
            (true, true, 0x90),
        ];
        for (ro, fua, want) in cases {
            for wce in [false, true] {
                let p = ModeParams {
                    read_only: ro,
                    fua,
                    wce,
                    ..params()
                };
                let d6 = sense(&sense_cdb(false, 0x08, 0, 0x08, 0, 255), &p).unwrap();
                assert_eq!(d6[2], want);
                let d10 = sense(&sense_cdb(true, 0x08, 0, 0x08, 0, 255), &p).unwrap();
                assert_eq!(d10[3], want);
                assert_eq!(d6[4 + 2] & 0x04 != 0, wce);
            }
        }
    }

    #[test]
    fn allocation_length_truncates() {
        let p = params();
        for ten in [false, true] {
            let full_len = hlen(ten) + 8 + 20;
            for alloc in [0u16, 1, 3, 4, 9, 12, 27, 28, 31, 200] {
                let mut b = [0xEEu8; 64];
                let r = mode_sense(&sense_cdb(ten, 0, 0, 0x08, 0, alloc), &p, &mut b).unwrap();
                assert_eq!(r.full, full_len);
                assert_eq!(r.len, full_len.min(usize::from(alloc)));
                let whole = sense(&sense_cdb(ten, 0, 0, 0x08, 0, 255), &p).unwrap();
                assert_eq!(b[..r.len], whole[..r.len]);
                assert!(b[r.len..].iter().all(|&v| v == 0xEE), "nothing past alloc");
            }
            // A buffer smaller than the allocation length.
            let mut b = [0u8; 5];
            let r = mode_sense(&sense_cdb(ten, 0, 0, 0x08, 0, 255), &p, &mut b).unwrap();
            assert_eq!((r.len, r.full), (5, full_len));
        }
        let mut b = [0u8; 1024];
        let cdb = [MODE_SENSE_10, 0, 0x3F, 0, 0, 0, 0, 0x01, 0x00, 0];
        let r = mode_sense(&cdb, &p, &mut b).unwrap();
        assert_eq!(r.len, r.full, "alloc 256 is read as 16 bits");
    }

    #[test]
    fn sense_refusals() {
        let p = params();
        let mut b = [0u8; 64];
        let cases: &[(&[u8], Sense)] = &[
            (&[0x12, 0, 0, 0, 255, 0], Sense::INVALID_OPCODE),
            (&[MODE_SELECT_6, 0, 0x08, 0, 255, 0], Sense::INVALID_OPCODE),
            (&[], Sense::INVALID_OPCODE),
            (
                &[MODE_SENSE_6, 0, 0x08, 0, 255],
                Sense::invalid_cdb_field(0, None),
            ),
            (
                &[MODE_SENSE_10, 0, 0x08, 0, 0, 0, 0, 0, 255],
                Sense::invalid_cdb_field(0, None),
            ),
            (
                &[MODE_SENSE_6, 0, 0xC8, 0, 255, 0],
                Sense::SAVING_PARAMETERS_NOT_SUPPORTED,
            ),
            (
                &[MODE_SENSE_10, 0, 0xFF, 0, 0, 0, 0, 0, 255, 0],
                Sense::SAVING_PARAMETERS_NOT_SUPPORTED,
            ),
            (
                &[MODE_SENSE_6, 0, 0x02, 0, 255, 0],
                Sense::invalid_cdb_field(2, Some(5)),
            ),
            (
                &[MODE_SENSE_6, 0, 0x00, 0, 255, 0],
                Sense::invalid_cdb_field(2, Some(5)),
            ),
            (
                &[MODE_SENSE_10, 0, 0x19, 0, 0, 0, 0, 0, 255, 0],
                Sense::invalid_cdb_field(2, Some(5)),
            ),
            (
                &[MODE_SENSE_6, 0, 0x08, 1, 255, 0],
                Sense::invalid_cdb_field(3, Some(7)),
            ),
            (
                &[MODE_SENSE_6, 0, 0x0A, 0xFF, 255, 0],
                Sense::invalid_cdb_field(3, Some(7)),
            ),
            (
                &[MODE_SENSE_10, 0, 0x3F, 0x01, 0, 0, 0, 0, 255, 0],
                Sense::invalid_cdb_field(3, Some(7)),
            ),
            // Unknown page with PC = 3: the page is reported first.
            (
                &[MODE_SENSE_6, 0, 0xC2, 0, 255, 0],
                Sense::invalid_cdb_field(2, Some(5)),
            ),
        ];
        for (cdb, want) in cases {
            assert_eq!(mode_sense(cdb, &p, &mut b), Err(*want), "{cdb:02x?}");
        }
        let s = Sense::invalid_cdb_field(2, Some(5));
        assert_eq!(
            s.sks,
            Sks::Field {
                cdb: true,
                byte: 2,
                bit: Some(5)
            }
        );
    }

    #[test]
    fn param_len() {
        assert_eq!(
            select_param_len(&[MODE_SELECT_6, 0x10, 0, 0, 24, 0]),
            Some(24)
        );
        assert_eq!(
            select_param_len(&[MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0x01, 0x02, 0]),
            Some(0x102)
        );
        assert_eq!(select_param_len(&[MODE_SENSE_6, 0, 8, 0, 24, 0]), None);
        assert_eq!(select_param_len(&[MODE_SELECT_6, 0x10]), None);
        assert_eq!(
            select_param_len(&[MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 1]),
            None
        );
        assert_eq!(select_param_len(&[]), None);
    }

    /// MODE SENSE current output (with block descriptor unless `dbd`, long
    /// when `llbaa`) of `code`, with the caching page's WCE flipped.
    fn sensed_list(ten: bool, dbd: bool, llbaa: bool, code: u8, p: &ModeParams) -> Vec<u8> {
        let flags = if dbd { 0x08 } else { 0 } | if llbaa { 0x10 } else { 0 };
        sense(&sense_cdb(ten, flags, 0, code, 0, 255), p).unwrap()
    }

    #[test]
    fn select_round_trip_flips_wce() {
        for ten in [false, true] {
            for dbd in [false, true] {
                for llbaa in [false, true] {
                    for wce in [false, true] {
                        let p = ModeParams {
                            wce,
                            blocks: 0x1_0000_0001,
                            read_only: true,
                            ..params()
                        };
                        let mut l = sensed_list(ten, dbd, llbaa, 0x08, &p);
                        let off = l.len() - 20 + 2;
                        assert_eq!(select(ten, &l, &p), Ok(wce), "unchanged");
                        l[off] ^= 0x04;
                        assert_eq!(select(ten, &l, &p), Ok(!wce), "{ten} {dbd} {llbaa}");
                        // PS set in the page header is ignored.
                        let code_at = l.len() - 20;
                        l[code_at] |= 0x80;
                        assert_eq!(select(ten, &l, &p), Ok(!wce));
                    }
                }
            }
        }
    }

    #[test]
    fn select_all_pages_and_last_caching_page_wins() {
        let p = params();
        for ten in [false, true] {
            let l = sensed_list(ten, false, false, 0x3F, &p);
            assert_eq!(select(ten, &l, &p), Ok(true));
            let mut l = l;
            let mut off = [0u8; 20];
            off[0] = 0x08;
            off[1] = 0x12;
            l.extend_from_slice(&off);
            assert_eq!(select(ten, &l, &p), Ok(false));
            l.extend(page(0x08, PageControl::Current, &p));
            assert_eq!(select(ten, &l, &p), Ok(true));
            // Pages other than caching only: WCE unchanged.
            let mut l = sensed_list(ten, true, false, 0x0A, &p);
            l.extend(page(0x1C, PageControl::Current, &p));
            l.extend(page(0x01, PageControl::Current, &p));
            assert_eq!(select(ten, &l, &p), Ok(true));
            let q = ModeParams { wce: false, ..p };
            let l = sensed_list(ten, true, false, 0x0A, &q);
            assert_eq!(select(ten, &l, &q), Ok(false));
            // A header alone changes nothing.
            let l = std::vec![0u8; hlen(ten)];
            assert_eq!(select(ten, &l, &q), Ok(false));
        }
    }

    #[test]
    fn select_linux_sd_cache_type_store() {
        // What sd's cache_type_store sends: DBD mode sense, the caching
        // page with WCE set, a header with medium type and device-specific
        // parameter zeroed.
        let p = ModeParams {
            wce: false,
            ..params()
        };
        let mut l = std::vec![0u8; 8];
        let mut pg = page(0x08, PageControl::Current, &p);
        pg[2] |= 0x04;
        l.extend_from_slice(&pg);
        assert_eq!(select(true, &l, &p), Ok(true));
        let mut l = std::vec![0u8; 4];
        l.extend_from_slice(&pg);
        assert_eq!(select(false, &l, &p), Ok(true));
    }

    #[test]
    fn select_cdb_refusals() {
        let p = params();
        let l = sensed_list(false, true, false, 0x08, &p);
        let cases: &[(Vec<u8>, Sense)] = &[
            (
                select_cdb(false, 0x00, l.len()),
                Sense::invalid_cdb_field(1, Some(4)),
            ),
            (
                select_cdb(true, 0x00, l.len()),
                Sense::invalid_cdb_field(1, Some(4)),
            ),
            (
                select_cdb(false, 0x11, l.len()),
                Sense::invalid_cdb_field(1, Some(0)),
            ),
            (
                select_cdb(true, 0x11, l.len()),
                Sense::invalid_cdb_field(1, Some(0)),
            ),
            (
                std::vec![MODE_SENSE_6, 0x10, 0, 0, 24, 0],
                Sense::INVALID_OPCODE,
            ),
            (std::vec![], Sense::INVALID_OPCODE),
            (
                std::vec![MODE_SELECT_6, 0x10, 0, 0, 24],
                Sense::invalid_cdb_field(0, None),
            ),
            (
                std::vec![MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0, 24],
                Sense::invalid_cdb_field(0, None),
            ),
        ];
        for (cdb, want) in cases {
            assert_eq!(mode_select(cdb, &l, &p), Err(*want), "{cdb:02x?}");
        }
    }

    #[test]
    fn select_empty_list() {
        for wce in [false, true] {
            let p = ModeParams { wce, ..params() };
            for ten in [false, true] {
                assert_eq!(mode_select(&select_cdb(ten, 0x10, 0), &[], &p), Ok(wce));
                // Length 0 in the CDB: whatever was passed is not looked at.
                assert_eq!(
                    mode_select(&select_cdb(ten, 0x10, 0), &[0xFF; 12], &p),
                    Ok(wce)
                );
            }
        }
    }

    #[test]
    fn select_truncated_lists() {
        let p = params();
        for ten in [false, true] {
            let full = sensed_list(ten, false, false, 0x08, &p);
            for cut in 1..full.len() {
                let r = select(ten, &full[..cut], &p);
                let h = hlen(ten);
                if cut == h + 8 {
                    assert_eq!(r, Ok(true), "header and descriptor only");
                } else {
                    assert_eq!(r, Err(Sense::PARAMETER_LIST_LENGTH_ERROR), "{ten} {cut}");
                }
            }
            // The CDB's length is longer than what was transferred.
            let cdb = select_cdb(ten, 0x10, full.len() + 4);
            assert_eq!(
                mode_select(&cdb, &full[..full.len() - 1], &p),
                Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
            );
            // More was transferred than the CDB says: the excess is ignored.
            let mut more = full.clone();
            more.extend_from_slice(&[0xFF; 7]);
            let cdb = select_cdb(ten, 0x10, full.len());
            assert_eq!(mode_select(&cdb, &more, &p), Ok(true));
        }
    }

    #[test]
    fn select_header_and_descriptor_refusals() {
        let p = ModeParams {
            blocks: 1000,
            block_size: 4096,
            ..params()
        };
        type Edit = fn(&mut Vec<u8>);
        // (10-byte, LLBAA, edit, expected): edits apply to a MODE SENSE
        // output of the caching page with a block descriptor.
        let cases: &[(bool, bool, Edit, Sense)] = &[
            (false, false, |l| l[1] = 1, param_field(1, 7)),
            (true, false, |l| l[2] = 0x40, param_field(2, 7)),
            (false, false, |l| l[3] = 16, param_field(3, 7)),
            (false, false, |l| l[3] = 4, param_field(3, 7)),
            (true, false, |l| l[7] = 16, param_field(6, 7)),
            (true, true, |l| l[7] = 8, param_field(6, 7)),
            (true, false, |l| l[6] = 1, param_field(6, 7)),
            // Wrong number of blocks.
            (false, false, |l| l[7] = 0xE9, param_field(4, 7)),
            (true, false, |l| l[8] = 1, param_field(8, 7)),
            (true, true, |l| l[15] = 0xE9, param_field(8, 7)),
            // Density code / reserved.
            (false, false, |l| l[8] = 1, param_field(8, 7)),
            (true, false, |l| l[12] = 0x80, param_field(12, 7)),
            (true, true, |l| l[16] = 1, param_field(16, 7)),
            (true, true, |l| l[18] = 0x20, param_field(18, 7)),
            // Wrong block length.
            (false, false, |l| l[10] = 0x02, param_field(9, 7)),
            (false, false, |l| l[9] = 0x01, param_field(9, 7)),
            (true, false, |l| l[14] = 0x02, param_field(13, 7)),
            (true, true, |l| l[22] = 0x02, param_field(20, 7)),
            (true, true, |l| l[20] = 0x02, param_field(20, 7)),
        ];
        for (i, (ten, llbaa, edit, want)) in cases.iter().enumerate() {
            let mut l = sensed_list(*ten, false, *llbaa, 0x08, &p);
            assert_eq!(select(*ten, &l, &p), Ok(true), "case {i} unedited");
            edit(&mut l);
            assert_eq!(select(*ten, &l, &p), Err(*want), "case {i}");
        }
        // Zero blocks means "unchanged"; mode data length and the device
        // specific parameter are ignored.
        for ten in [false, true] {
            for llbaa in [false, true] {
                let mut l = sensed_list(ten, false, llbaa && ten, 0x08, &p);
                let h = hlen(ten);
                let n = if llbaa && ten { 8 } else { 4 };
                for b in &mut l[h..h + n] {
                    *b = 0;
                }
                l[0] = 0x77;
                l[h - if ten { 5 } else { 2 }] = 0xFF;
                assert_eq!(select(ten, &l, &p), Ok(true), "{ten} {llbaa}");
            }
        }
        // A descriptor longer than the list.
        let l = [0u8, 0, 0, 8, 0, 0];
        assert_eq!(
            select(false, &l, &p),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        // Clamped short block count accepted for big devices.
        let big = ModeParams {
            blocks: 0x2_0000_0000,
            ..p
        };
        let l = sensed_list(true, false, false, 0x08, &big);
        assert_eq!(be32(&l, 8), Some(0xFFFF_FFFF));
        assert_eq!(select(true, &l, &big), Ok(true));
    }

    #[test]
    fn select_page_refusals() {
        let p = params();
        type Edit = fn(&mut Vec<u8>, usize);
        // Edits apply at `at`, the page's first byte, in a DBD list of the
        // given page.
        type Want = fn(usize) -> Sense;
        let cases: &[(u8, Edit, Want)] = &[
            // RCD.
            (0x08, |l, at| l[at + 2] |= 0x01, |at| param_field(at + 2, 0)),
            // MF and WCE: MF (bit 1) is the highest differing bit.
            (0x08, |l, at| l[at + 2] ^= 0x06, |at| param_field(at + 2, 1)),
            (
                0x08,
                |l, at| l[at + 12] = 0x20,
                |at| param_field(at + 12, 5),
            ),
            (
                0x08,
                |l, at| l[at + 19] = 0x81,
                |at| param_field(at + 19, 7),
            ),
            // Control page: D_SENSE, QERR, TAS, busy timeout.
            (0x0A, |l, at| l[at + 2] |= 0x04, |at| param_field(at + 2, 2)),
            (0x0A, |l, at| l[at + 3] |= 0x02, |at| param_field(at + 3, 1)),
            (0x0A, |l, at| l[at + 5] ^= 0x40, |at| param_field(at + 5, 6)),
            (0x0A, |l, at| l[at + 9] = 0, |at| param_field(at + 9, 7)),
            (0x01, |l, at| l[at + 2] = 0xC0, |at| param_field(at + 2, 7)),
            (0x1C, |l, at| l[at + 3] = 0x0F, |at| param_field(at + 3, 3)),
            // SPF.
            (0x08, |l, at| l[at] |= 0x40, |at| param_field(at, 6)),
            // Unknown pages.
            (0x08, |l, at| l[at] = 0x02, |at| param_field(at, 5)),
            (0x08, |l, at| l[at] = 0x3F, |at| param_field(at, 5)),
            (0x08, |l, at| l[at] = 0x00, |at| param_field(at, 5)),
            // Page length mismatch.
            (0x08, |l, at| l[at + 1] = 0x0A, |at| param_field(at + 1, 7)),
            (0x0A, |l, at| l[at + 1] = 0x12, |at| param_field(at + 1, 7)),
            (0x1C, |l, at| l[at + 1] = 0x0B, |at| param_field(at + 1, 7)),
        ];
        for ten in [false, true] {
            for (i, (code, edit, want)) in cases.iter().enumerate() {
                let mut l = sensed_list(ten, true, false, *code, &p);
                let at = hlen(ten);
                edit(&mut l, at);
                assert_eq!(select(ten, &l, &p), Err(want(at)), "{ten} case {i}");
                // Same, after a valid page and a block descriptor.
                let mut l = sensed_list(ten, false, false, 0x01, &p);
                let at = l.len();
                l.extend(sensed_list(ten, true, false, *code, &p)[hlen(ten)..].iter());
                edit(&mut l, at);
                assert_eq!(select(ten, &l, &p), Err(want(at)), "{ten} case {i} later");
            }
        }
        // A page length mismatch that also runs past the list end is
        // reported as the mismatch.
        let mut l = sensed_list(false, true, false, 0x01, &p);
        l[5] = 0x40;
        assert_eq!(select(false, &l, &p), Err(param_field(5, 7)));
    }

    #[test]
    fn changeable_mask_is_what_select_accepts() {
        // The changeable mask is what MODE SELECT accepts: flipping any
        // bit outside it is refused, inside it accepted.
        let p = params();
        for code in PAGES {
            let mask = page(code, PageControl::Changeable, &p);
            let cur = page(code, PageControl::Current, &p);
            for i in 2..cur.len() {
                for bit in 0..8 {
                    let mut l = std::vec![0u8; 4];
                    l.extend_from_slice(&cur);
                    l[4 + i] ^= 1 << bit;
                    let r = select(false, &l, &p);
                    if mask[i] & (1 << bit) != 0 {
                        assert_eq!(r, Ok(l[4 + i] & 0x04 != 0));
                    } else {
                        assert_eq!(r, Err(param_field(4 + i, bit)), "{code:#x} {i} {bit}");
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ops = [MODE_SENSE_6, MODE_SENSE_10, MODE_SELECT_6, MODE_SELECT_10];
        for _ in 0..20_000 {
            let r = next();
            let mut cdb = [0u8; 16];
            for b in cdb.iter_mut() {
                *b = next() as u8;
            }
            if r & 7 != 0 {
                cdb[0] = ops[(r >> 3) as usize % ops.len()];
            }
            if r & 0x40 != 0 {
                cdb[1] |= 0x10;
                cdb[1] &= !0x01;
            }
            let cdb_len = (r >> 8) as usize % 17;
            let cdb = &cdb[..cdb_len];
            let q = ModeParams {
                wce: r & 0x1_0000 != 0,
                wce_default: r & 0x2_0000 != 0,
                read_only: r & 0x4_0000 != 0,
                fua: r & 0x8_0000 != 0,
                tas: r & 0x10_0000 != 0,
                blocks: next() >> (next() % 64),
                block_size: (next() >> (next() % 64)) as u32,
            };
            // Parameter lists: random bytes, or a valid list mutated.
            let list = if r & 0x20_0000 != 0 {
                let ten = r & 0x40_0000 != 0;
                let mut l = sense(&sense_cdb(ten, 0, 0, 0x3F, 0, 255), &q).unwrap();
                let n = l.len();
                for _ in 0..(next() % 4) {
                    let i = next() as usize % n;
                    l[i] ^= 1 << (next() % 8);
                }
                l.truncate(next() as usize % (n + 1));
                l
            } else {
                (0..next() % 80).map(|_| next() as u8).collect()
            };
            let mut buf = std::vec![0u8; next() as usize % 80];
            if let Ok(d) = mode_sense(cdb, &q, &mut buf) {
                assert!(d.len <= buf.len() && d.len <= d.full);
            }
            let _ = mode_select(cdb, &list, &q);
            let _ = select_param_len(cdb);
            for ten in [false, true] {
                let _ = mode_select(&select_cdb(ten, 0x10, list.len()), &list, &q);
            }
        }
    }

    #[test]
    fn newer_generation_wins_then_the_primary() {
        // Newer at the peer: taken whoever is primary.
        assert!(adopt((1, true), (2, false), false));
        assert!(adopt((1, true), (2, false), true));
        // Older at the peer: kept.
        assert!(!adopt((3, false), (2, true), true));
        // Same generation, different values: the primary's.
        assert!(adopt((4, true), (4, false), true));
        assert!(!adopt((4, true), (4, false), false));
        // Nothing differs: nothing to take.
        assert!(!adopt((5, true), (5, true), true));
    }
}
