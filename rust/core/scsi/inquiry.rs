// SPDX-License-Identifier: GPL-2.0

//! INQUIRY (standard data and VPD pages) and REPORT TARGET PORT GROUPS.
//!
//! Under `TRANSPORT_FLAG_PASSTHROUGH_ALUA` the core reports TPGS = 0, no
//! target port group designator and an empty RTPG
//! (lio-and-rust-for-linux-7.3.md §A.2), so the backstore answers these
//! itself, as CTL does (freebsd-ctl-ha-behaviour.md §1.4, §6.2, §6.3).

use super::alua::{AccessState, STATUS_ALTERED_IMPLICIT, SUPPORTED_STATES};
use super::out::{sat16, sat32, Out};
use super::sense::Sense;
use super::{be16, be32, byte, DataIn};

/// Peripheral device type of a direct-access block device.
pub(crate) const TYPE_DISK: u8 = 0x00;

/// VERSION field of standard INQUIRY data: SPC-4.
pub(crate) const VERSION_SPC4: u8 = 0x06;

/// Length of the standard INQUIRY data built here.
pub(crate) const STANDARD_LEN: usize = 74;

/// IEEE company id used in the NAA designator: 00-14-05, the one LIO uses,
/// so that tcm_ha's designators look like LIO's to tools.
pub(crate) const NAA_COMPANY_ID: u32 = 0x00_1405;

/// VPD page codes this module can build.
pub(crate) mod page {
    /// Supported VPD pages.
    pub(crate) const SUPPORTED: u8 = 0x00;
    /// Unit serial number.
    pub(crate) const UNIT_SERIAL: u8 = 0x80;
    /// Device identification.
    pub(crate) const DEVICE_ID: u8 = 0x83;
    /// Block limits.
    pub(crate) const BLOCK_LIMITS: u8 = 0xB0;
    /// Block device characteristics.
    pub(crate) const BLOCK_CHARACTERISTICS: u8 = 0xB1;
    /// Logical block provisioning.
    pub(crate) const LBP: u8 = 0xB2;
}

/// Pages [`inquiry`] can build, in ascending order (a ready-made list for
/// [`LunInfo::vpd_pages`]).
pub(crate) const ALL_PAGES: [u8; 6] = [
    page::SUPPORTED,
    page::UNIT_SERIAL,
    page::DEVICE_ID,
    page::BLOCK_LIMITS,
    page::BLOCK_CHARACTERISTICS,
    page::LBP,
];

/// Protocol identifiers (SPC-4 table 362) for port designators.
pub(crate) mod proto {
    /// Fibre Channel.
    pub(crate) const FC: u8 = 0x0;
    /// Parallel SCSI; CTL's fallback (§6.3).
    pub(crate) const SPI: u8 = 0x1;
    /// SCSI RDMA (SRP).
    pub(crate) const SRP: u8 = 0x4;
    /// iSCSI.
    pub(crate) const ISCSI: u8 = 0x5;
    /// SAS (also what tcm_loop reports).
    pub(crate) const SAS: u8 = 0x6;
}

/// Contents of the Block Limits VPD page (B0h, SBC-3 §6.5.3). Lengths are
/// in logical blocks; 0 means "not reported" / "no limit".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockLimits {
    /// WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is refused.
    pub(crate) wsnz: bool,
    /// MAXIMUM COMPARE AND WRITE LENGTH (0: COMPARE AND WRITE unsupported).
    pub(crate) max_compare_write: u8,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY.
    pub(crate) opt_xfer_granularity: u16,
    /// MAXIMUM TRANSFER LENGTH.
    pub(crate) max_xfer: u32,
    /// OPTIMAL TRANSFER LENGTH.
    pub(crate) opt_xfer: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub(crate) max_unmap_lbas: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub(crate) max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY.
    pub(crate) unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT (sets UGAVALID; values above 2^31-1
    /// are not representable and leave UGAVALID clear).
    pub(crate) unmap_alignment: Option<u32>,
    /// MAXIMUM WRITE SAME LENGTH.
    pub(crate) max_write_same: u64,
}

/// Contents of the Logical Block Provisioning VPD page (B2h, SBC-3 §6.5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Provisioning {
    /// LBPU: UNMAP is supported.
    pub(crate) unmap: bool,
    /// LBPWS: WRITE SAME(16) with UNMAP is supported.
    pub(crate) write_same_16: bool,
    /// LBPWS10: WRITE SAME(10) with UNMAP is supported.
    pub(crate) write_same_10: bool,
    /// LBPRZ: unmapped blocks read as zeros.
    pub(crate) lbprz: bool,
    /// PROVISIONING TYPE 010b (thin); otherwise 000b (full / not reported).
    pub(crate) thin: bool,
}

/// What INQUIRY reports about the logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LunInfo<'a> {
    /// Peripheral qualifier (3 bits), see `alua::peripheral_qualifier`.
    pub(crate) qualifier: u8,
    /// Peripheral device type (5 bits), normally [`TYPE_DISK`].
    pub(crate) device_type: u8,
    /// T10 vendor identification (8 bytes, space padded or cut).
    pub(crate) vendor: &'a [u8],
    /// Product identification (16 bytes, space padded or cut).
    pub(crate) product: &'a [u8],
    /// Product revision level (4 bytes, space padded or cut).
    pub(crate) revision: &'a [u8],
    /// Unit serial number (ASCII), the LUN identity both nodes share.
    pub(crate) serial: &'a [u8],
    /// 3PC: third-party copy (EXTENDED COPY) is supported.
    pub(crate) three_pc: bool,
    /// MULTIP: the unit has more than one port (set on HA nodes).
    pub(crate) multi_port: bool,
    /// Pages listed by VPD page 00h, ascending. A page is served only if it
    /// is both listed here and in [`ALL_PAGES`].
    pub(crate) vpd_pages: &'a [u8],
    /// Block Limits page contents.
    pub(crate) block_limits: BlockLimits,
    /// Block device characteristics: non-rotating medium (rotation rate 1).
    pub(crate) non_rotating: bool,
    /// Logical Block Provisioning page contents.
    pub(crate) provisioning: Provisioning,
}

/// The target port a command arrived through, for VPD 83h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortInfo<'a> {
    /// Relative target port identifier (unique across both nodes).
    pub(crate) rel_port_id: u16,
    /// Target port group the port belongs to (`alua::node_tpg_id`).
    pub(crate) tpg_id: u16,
    /// Protocol identifier of the fabric ([`proto`]).
    pub(crate) protocol: u8,
    /// SCSI name string of the target port (for iSCSI
    /// `"<iqn>,t,0x<tpgt>"`), reported when present.
    pub(crate) port_name: Option<&'a [u8]>,
    /// SCSI name string of the target device (for iSCSI the target iqn),
    /// reported when present.
    pub(crate) target_name: Option<&'a [u8]>,
}

/// Designator code sets.
const CODE_BINARY: u8 = 1;
const CODE_ASCII: u8 = 2;
const CODE_UTF8: u8 = 3;
/// Designator associations.
const ASSOC_LU: u8 = 0;
const ASSOC_PORT: u8 = 1;
const ASSOC_TARGET: u8 = 2;
/// Designator types.
const DESIG_T10: u8 = 1;
const DESIG_NAA: u8 = 3;
const DESIG_REL_PORT: u8 = 4;
const DESIG_TPG: u8 = 5;
const DESIG_NAME: u8 = 8;

/// Handles INQUIRY: checks the CDB and builds the standard data or the
/// requested VPD page into `buf`, clipped to the allocation length.
///
/// Refusals (ILLEGAL REQUEST, INVALID FIELD IN CDB with a field pointer):
/// CMDDT set (byte 1 bit 1); PAGE CODE non-zero without EVPD (byte 2); a
/// page that is not both listed and buildable (byte 2); a CDB shorter than
/// 6 bytes (byte 0).
pub(crate) fn inquiry(
    cdb: &[u8],
    lun: &LunInfo<'_>,
    port: &PortInfo<'_>,
    buf: &mut [u8],
) -> Result<DataIn, Sense> {
    if cdb.len() < 6 {
        return Err(Sense::invalid_cdb_field(0, None));
    }
    let b1 = byte(cdb, 1);
    let page_code = byte(cdb, 2);
    let alloc = usize::from(be16(cdb, 3).unwrap_or(0));
    if b1 & 0x02 != 0 {
        return Err(Sense::invalid_cdb_field(1, Some(1)));
    }
    let evpd = b1 & 0x01 != 0;
    if !evpd && page_code != 0 {
        return Err(Sense::invalid_cdb_field(2, Some(7)));
    }
    let buf_len = buf.len();
    let lim = alloc.min(buf_len);
    let out = buf.get_mut(..lim).unwrap_or(&mut []);
    let full = if !evpd {
        standard(lun, out)
    } else {
        if !lun.vpd_pages.contains(&page_code) {
            return Err(Sense::invalid_cdb_field(2, Some(7)));
        }
        match page_code {
            page::SUPPORTED => vpd_supported(lun, out),
            page::UNIT_SERIAL => vpd_serial(lun, out),
            page::DEVICE_ID => vpd_device_id(lun, port, out),
            page::BLOCK_LIMITS => vpd_block_limits(lun, out),
            page::BLOCK_CHARACTERISTICS => vpd_characteristics(lun, out),
            page::LBP => vpd_lbp(lun, out),
            _ => return Err(Sense::invalid_cdb_field(2, Some(7))),
        }
    };
    Ok(DataIn::new(full, alloc, buf_len))
}

/// Byte 0 of INQUIRY data and VPD pages.
fn peripheral(lun: &LunInfo<'_>) -> u8 {
    ((lun.qualifier & 0x07) << 5) | (lun.device_type & 0x1F)
}

/// Standard INQUIRY data ([`STANDARD_LEN`] bytes): SPC-4, HISUP, response
/// format 2, TPGS = 01b (implicit ALUA only, §1.4), 3PC and MULTIP as
/// given, CMDQUE, space-padded identification fields and version
/// descriptors SAM-5, SPC-4, SBC-3. Returns the untruncated length.
pub(crate) fn standard(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    o.u8(peripheral(lun));
    o.u8(0); // RMB = 0
    o.u8(VERSION_SPC4);
    o.u8(0x10 | 0x02); // HISUP, response data format 2
    o.u8(0); // additional length, set below
    let mut b5 = 0x10; // TPGS = 01b: implicit ALUA
    if lun.three_pc {
        b5 |= 0x08;
    }
    o.u8(b5);
    o.u8(if lun.multi_port { 0x10 } else { 0 });
    o.u8(0x02); // CMDQUE
    o.padded(lun.vendor, 8, b' ');
    o.padded(lun.product, 16, b' ');
    o.padded(lun.revision, 4, b' ');
    o.zeros(20); // vendor specific
    o.zeros(2); // clocking/QAS/IUS, reserved
    for d in [0x00A0u16, 0x0460, 0x04C0] {
        o.be16(d); // SAM-5, SPC-4, SBC-3
    }
    o.zeros(10); // unused version descriptors
    let n = o.len();
    o.set(4, u8::try_from(n.saturating_sub(5)).unwrap_or(u8::MAX));
    n
}

/// Starts a VPD page: peripheral byte, page code, length placeholder.
fn vpd_header(o: &mut Out<'_>, lun: &LunInfo<'_>, code: u8) {
    o.u8(peripheral(lun));
    o.u8(code);
    o.be16(0);
}

/// Sets the PAGE LENGTH of a VPD page and returns its total length.
fn vpd_finish(mut o: Out<'_>) -> usize {
    let n = o.len();
    o.set_be16(2, sat16(n.saturating_sub(4)));
    n
}

/// VPD 00h: the pages in `lun.vpd_pages`, as given.
pub(crate) fn vpd_supported(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::SUPPORTED);
    o.bytes(lun.vpd_pages);
    vpd_finish(o)
}

/// VPD 80h: the unit serial number.
pub(crate) fn vpd_serial(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::UNIT_SERIAL);
    o.bytes(lun.serial);
    vpd_finish(o)
}

/// 64-bit FNV-1a of `bytes` in the given order, from `basis`.
fn fnv1a(bytes: impl Iterator<Item = u8>, basis: u64) -> u64 {
    let mut h = basis;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The 25 nibbles (100 bits) of VENDOR SPECIFIC IDENTIFIER and its
/// EXTENSION in an NAA type 6 designator, derived from the unit serial:
///
/// * if the serial is non-empty and made only of hex digits and `-` (a
///   UUID, say), its hex digits in order, the first 25 of them, padded with
///   zeros: the same mapping LIO uses, so a UUID serial gives LIO's
///   `naa.6001405...` value. Serials that agree in their first 25 hex
///   digits collide; use serials that differ early;
/// * otherwise 100 bits of hashes of the serial bytes: the 64 bits of
///   FNV-1a 64 over the bytes forwards, then the top 36 bits of FNV-1a 64
///   over the bytes backwards seeded with the first hash, so any text serial
///   gives a stable, well spread id.
///
/// Both nodes derive the designator from the serial they agree on, so it is
/// the same on every path.
pub(crate) fn naa_nibbles(serial: &[u8]) -> [u8; 25] {
    let mut n = [0u8; 25];
    let hexlike = serial.iter().any(u8::is_ascii_hexdigit)
        && serial.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    if hexlike {
        let digits = serial.iter().filter_map(|c| char::from(*c).to_digit(16));
        for (slot, d) in n.iter_mut().zip(digits) {
            // to_digit(16) returns 0..=15.
            *slot = u8::try_from(d).unwrap_or(0);
        }
    } else {
        let a = fnv1a(serial.iter().copied(), 0xCBF2_9CE4_8422_2325);
        let b = fnv1a(serial.iter().rev().copied(), a);
        for (i, slot) in n.iter_mut().enumerate() {
            // i < 25: nibbles 0..16 from `a`, 16..25 from the top of `b`;
            // the shift is 60 - 4 * (i mod 16), in 0..=60.
            let (h, j) = if i < 16 {
                (a, i)
            } else {
                (b, i.saturating_sub(16))
            };
            let shift = 60usize.saturating_sub(j.saturating_mul(4));
            *slot = ((h >> shift) & 0xF) as u8;
        }
    }
    n
}

/// The 16-byte NAA IEEE Registered Extended (type 6) designator of a unit
/// serial: NAA 6h, [`NAA_COMPANY_ID`], then [`naa_nibbles`].
pub(crate) fn naa_designator(serial: &[u8]) -> [u8; 16] {
    let mut nib = [0u8; 32];
    nib[0] = 0x6;
    for (i, slot) in nib.iter_mut().skip(1).take(6).enumerate() {
        // i < 6: shift 20 - 4i in 0..=20.
        let shift = 20usize.saturating_sub(i.saturating_mul(4));
        *slot = ((NAA_COMPANY_ID >> shift) & 0xF) as u8;
    }
    for (slot, v) in nib.iter_mut().skip(7).zip(naa_nibbles(serial)) {
        *slot = v;
    }
    let mut d = [0u8; 16];
    for (o, pair) in d.iter_mut().zip(nib.chunks_exact(2)) {
        let hi = pair.first().copied().unwrap_or(0);
        let lo = pair.get(1).copied().unwrap_or(0);
        *o = (hi << 4) | (lo & 0xF);
    }
    d
}

/// Appends one designation descriptor.
fn designator(o: &mut Out<'_>, proto: u8, code_set: u8, assoc: u8, kind: u8, data: &[u8]) {
    let piv = if assoc == ASSOC_LU { 0 } else { 0x80 };
    o.u8(((proto & 0xF) << 4) | (code_set & 0xF));
    o.u8(piv | ((assoc & 0x3) << 4) | (kind & 0xF));
    o.u8(0);
    o.u8(u8::try_from(data.len()).unwrap_or(u8::MAX));
    o.bytes(data);
}

/// Appends a SCSI name string designator: the name cut to 251 bytes, NUL
/// terminated and NUL padded to a multiple of 4 (SPC-4 §7.8.6.11).
fn name_designator(o: &mut Out<'_>, proto: u8, assoc: u8, name: &[u8]) {
    let name = name.get(..name.len().min(251)).unwrap_or(&[]);
    // name.len() <= 251, so len <= 252 fits the 1-byte length.
    let len = name.len().saturating_add(4) & !3;
    let piv = if assoc == ASSOC_LU { 0 } else { 0x80 };
    o.u8(((proto & 0xF) << 4) | CODE_UTF8);
    o.u8(piv | ((assoc & 0x3) << 4) | DESIG_NAME);
    o.u8(0);
    o.u8(u8::try_from(len).unwrap_or(u8::MAX));
    o.bytes(name);
    o.zeros(len.saturating_sub(name.len()));
}

/// VPD 83h, in CTL's order (freebsd-ctl-ha-behaviour.md §6.3): T10 vendor
/// id (vendor + serial, serial cut to 247 bytes), NAA type 6
/// ([`naa_designator`]), the target port's SCSI name (if given), relative
/// target port (type 4), target port group (type 5), the target device's
/// SCSI name (if given).
pub(crate) fn vpd_device_id(lun: &LunInfo<'_>, port: &PortInfo<'_>, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::DEVICE_ID);

    let mut t10 = [b' '; 255];
    for (d, s) in t10.iter_mut().zip(lun.vendor.iter().take(8)) {
        *d = *s;
    }
    let serial = lun.serial.get(..lun.serial.len().min(247)).unwrap_or(&[]);
    for (d, s) in t10.iter_mut().skip(8).zip(serial) {
        *d = *s;
    }
    let t10_len = serial.len().saturating_add(8);
    designator(
        &mut o,
        0,
        CODE_ASCII,
        ASSOC_LU,
        DESIG_T10,
        t10.get(..t10_len).unwrap_or(&t10),
    );
    designator(
        &mut o,
        0,
        CODE_BINARY,
        ASSOC_LU,
        DESIG_NAA,
        &naa_designator(lun.serial),
    );
    if let Some(name) = port.port_name {
        name_designator(&mut o, port.protocol, ASSOC_PORT, name);
    }
    let [rh, rl] = port.rel_port_id.to_be_bytes();
    designator(
        &mut o,
        port.protocol,
        CODE_BINARY,
        ASSOC_PORT,
        DESIG_REL_PORT,
        &[0, 0, rh, rl],
    );
    let [th, tl] = port.tpg_id.to_be_bytes();
    designator(
        &mut o,
        port.protocol,
        CODE_BINARY,
        ASSOC_PORT,
        DESIG_TPG,
        &[0, 0, th, tl],
    );
    if let Some(name) = port.target_name {
        name_designator(&mut o, port.protocol, ASSOC_TARGET, name);
    }
    vpd_finish(o)
}

/// VPD B0h, Block Limits (page length 3Ch).
pub(crate) fn vpd_block_limits(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let l = &lun.block_limits;
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::BLOCK_LIMITS);
    o.u8(u8::from(l.wsnz));
    o.u8(l.max_compare_write);
    o.be16(l.opt_xfer_granularity);
    o.be32(l.max_xfer);
    o.be32(l.opt_xfer);
    o.be32(0); // maximum prefetch length
    o.be32(l.max_unmap_lbas);
    o.be32(l.max_unmap_descriptors);
    o.be32(l.unmap_granularity);
    match l.unmap_alignment {
        Some(a) if a <= 0x7FFF_FFFF => o.be32(0x8000_0000 | a),
        _ => o.be32(0),
    }
    o.be64(l.max_write_same);
    o.zeros(20); // atomic limits: not supported
    vpd_finish(o)
}

/// VPD B1h, Block Device Characteristics (page length 3Ch): medium rotation
/// rate 1 (non-rotating) or 0 (not reported).
pub(crate) fn vpd_characteristics(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::BLOCK_CHARACTERISTICS);
    o.be16(u16::from(lun.non_rotating));
    o.zeros(58);
    vpd_finish(o)
}

/// VPD B2h, Logical Block Provisioning (page length 4, no provisioning
/// group descriptor).
pub(crate) fn vpd_lbp(lun: &LunInfo<'_>, buf: &mut [u8]) -> usize {
    let p = &lun.provisioning;
    let mut o = Out::new(buf);
    vpd_header(&mut o, lun, page::LBP);
    o.u8(0); // threshold exponent
    let mut b = 0u8;
    if p.unmap {
        b |= 0x80;
    }
    if p.write_same_16 {
        b |= 0x40;
    }
    if p.write_same_10 {
        b |= 0x20;
    }
    if p.lbprz {
        b |= 0x04; // LBPRZ = 001b
    }
    o.u8(b);
    o.u8(if p.thin { 0x02 } else { 0x00 });
    o.u8(0);
    vpd_finish(o)
}

/// One target port group as REPORT TARGET PORT GROUPS lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortGroup<'a> {
    /// Target port group identifier.
    pub(crate) id: u16,
    /// Asymmetric access state.
    pub(crate) state: AccessState,
    /// PREF bit.
    pub(crate) pref: bool,
    /// Supported-states byte (T_SUP .. AO_SUP).
    pub(crate) supported: u8,
    /// Status code.
    pub(crate) status: u8,
    /// Relative target port identifiers of the group's ports; at most 255
    /// are listed (the count field is one byte).
    pub(crate) ports: &'a [u16],
}

impl<'a> PortGroup<'a> {
    /// A group as CTL reports it: PREF clear, supported states 8Fh, status
    /// 02h (freebsd-ctl-ha-behaviour.md §1.4).
    pub(crate) fn ctl(id: u16, state: AccessState, ports: &'a [u16]) -> PortGroup<'a> {
        PortGroup {
            id,
            state,
            pref: false,
            supported: SUPPORTED_STATES,
            status: STATUS_ALTERED_IMPLICIT,
            ports,
        }
    }
}

/// RTPG parameter data format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RtpgFormat {
    /// 000b: 4-byte length-only header.
    LengthOnly,
    /// 001b: 8-byte extended header, format type 1 (byte 4 = 10h) and the
    /// IMPLICIT TRANSITION TIME in seconds.
    Extended {
        /// Implicit transition time (CTL reports 0).
        transition_time: u8,
    },
}

/// Builds REPORT TARGET PORT GROUPS parameter data into `buf`; returns the
/// untruncated length.
pub(crate) fn build_rtpg(groups: &[PortGroup<'_>], fmt: RtpgFormat, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    o.be32(0); // return data length, set below
    if let RtpgFormat::Extended { transition_time } = fmt {
        o.u8(0x10);
        o.u8(transition_time);
        o.zeros(2);
    }
    for g in groups {
        let ports = g.ports.get(..g.ports.len().min(255)).unwrap_or(&[]);
        o.u8(if g.pref { 0x80 } else { 0 } | g.state.code());
        o.u8(g.supported);
        o.be16(g.id);
        o.u8(0);
        o.u8(g.status);
        o.u8(0); // vendor specific
        o.u8(u8::try_from(ports.len()).unwrap_or(u8::MAX));
        for p in ports {
            o.be16(0);
            o.be16(*p);
        }
    }
    let n = o.len();
    o.set_be32(0, sat32(n.saturating_sub(4)));
    n
}

/// Handles REPORT TARGET PORT GROUPS (A3h/0Ah): parameter data format from
/// byte 1 bits 7..5 (000b length only, 001b extended with transition time
/// 0 as CTL), allocation length from bytes 6..9. Another format is refused
/// with INVALID FIELD IN CDB (byte 1 bit 7), a CDB shorter than 12 bytes
/// with INVALID FIELD IN CDB (byte 0). An allocation length below 4 is not
/// an error (SPC-4 §4.2.5.6): the data is just clipped.
pub(crate) fn report_target_port_groups(
    cdb: &[u8],
    groups: &[PortGroup<'_>],
    buf: &mut [u8],
) -> Result<DataIn, Sense> {
    if cdb.len() < 12 {
        return Err(Sense::invalid_cdb_field(0, None));
    }
    let fmt = match byte(cdb, 1) >> 5 {
        0 => RtpgFormat::LengthOnly,
        1 => RtpgFormat::Extended { transition_time: 0 },
        _ => return Err(Sense::invalid_cdb_field(1, Some(7))),
    };
    let alloc = usize::try_from(be32(cdb, 6).unwrap_or(0)).unwrap_or(usize::MAX);
    let buf_len = buf.len();
    let out = buf.get_mut(..alloc.min(buf_len)).unwrap_or(&mut []);
    let full = build_rtpg(groups, fmt, out);
    Ok(DataIn::new(full, alloc, buf_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn lun() -> LunInfo<'static> {
        LunInfo {
            qualifier: 0,
            device_type: TYPE_DISK,
            vendor: b"LIO-ORG",
            product: b"tcm_ha",
            revision: b"1.0",
            serial: b"6a1e4d52-1c8f-4b1a-9e2b-0123456789ab",
            three_pc: true,
            multi_port: true,
            vpd_pages: &ALL_PAGES,
            block_limits: BlockLimits {
                wsnz: true,
                max_compare_write: 1,
                opt_xfer_granularity: 8,
                max_xfer: 0x2000,
                opt_xfer: 0x100,
                max_unmap_lbas: 0xFFFF_FFFF,
                max_unmap_descriptors: 1,
                unmap_granularity: 8,
                unmap_alignment: Some(0),
                max_write_same: 0x1_0000,
            },
            non_rotating: true,
            provisioning: Provisioning {
                unmap: true,
                write_same_16: true,
                write_same_10: true,
                lbprz: true,
                thin: true,
            },
        }
    }

    fn port() -> PortInfo<'static> {
        PortInfo {
            rel_port_id: 0x0102,
            tpg_id: 3,
            protocol: proto::ISCSI,
            port_name: Some(b"iqn.2025-01.org.example:t1,t,0x0001"),
            target_name: None,
        }
    }

    fn inq(cdb: &[u8], l: &LunInfo<'_>) -> Result<Vec<u8>, Sense> {
        let mut b = [0u8; 1024];
        let r = inquiry(cdb, l, &port(), &mut b)?;
        Ok(b[..r.len].to_vec())
    }

    fn cdb(evpd: bool, page: u8, alloc: u16) -> [u8; 6] {
        let [h, l] = alloc.to_be_bytes();
        [0x12, u8::from(evpd), page, h, l, 0]
    }

    #[test]
    fn standard_data() {
        let d = inq(&cdb(false, 0, 255), &lun()).unwrap();
        assert_eq!(d.len(), STANDARD_LEN);
        assert_eq!(d[0], 0x00);
        assert_eq!(d[2], 0x06);
        assert_eq!(d[3], 0x12);
        assert_eq!(usize::from(d[4]), STANDARD_LEN - 5);
        assert_eq!(d[5], 0x18, "TPGS=01b and 3PC");
        assert_eq!(d[6], 0x10, "MULTIP");
        assert_eq!(d[7], 0x02, "CMDQUE");
        assert_eq!(&d[8..16], b"LIO-ORG ");
        assert_eq!(&d[16..32], b"tcm_ha          ");
        assert_eq!(&d[32..36], b"1.0 ");
        assert_eq!(&d[58..64], &[0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0]);
        let mut l = lun();
        l.qualifier = 1;
        l.three_pc = false;
        l.multi_port = false;
        l.vendor = b"AVERYLONGVENDOR";
        let d = inq(&cdb(false, 0, 255), &l).unwrap();
        assert_eq!(d[0], 0x20);
        assert_eq!(d[5], 0x10);
        assert_eq!(d[6], 0x00);
        assert_eq!(&d[8..16], b"AVERYLON");
    }

    #[test]
    fn allocation_length_clips() {
        let mut b = [0xEEu8; 100];
        let r = inquiry(&cdb(false, 0, 5), &lun(), &port(), &mut b).unwrap();
        assert_eq!(
            r,
            DataIn {
                len: 5,
                full: STANDARD_LEN
            }
        );
        assert_eq!(b[4], (STANDARD_LEN - 5) as u8);
        assert_eq!(b[5], 0xEE, "nothing written past the allocation length");
        let r = inquiry(&cdb(false, 0, 0), &lun(), &port(), &mut b).unwrap();
        assert_eq!(r.len, 0);
        let mut small = [0u8; 10];
        let r = inquiry(&cdb(true, 0x83, 0xFFFF), &lun(), &port(), &mut small).unwrap();
        assert_eq!(r.len, 10);
        assert!(r.full > 10);
    }

    #[test]
    fn cdb_validation() {
        let l = lun();
        assert_eq!(
            inq(&cdb(false, 0x80, 255), &l),
            Err(Sense::invalid_cdb_field(2, Some(7)))
        );
        assert_eq!(
            inq(&[0x12, 0x02, 0, 0, 255, 0], &l),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
        assert_eq!(
            inq(&cdb(true, 0x86, 255), &l),
            Err(Sense::invalid_cdb_field(2, Some(7)))
        );
        assert_eq!(
            inq(&[0x12, 1, 0], &l),
            Err(Sense::invalid_cdb_field(0, None))
        );
        // Listed by the caller but not buildable here.
        let mut l2 = lun();
        l2.vpd_pages = &[0x00, 0x86];
        assert_eq!(
            inq(&cdb(true, 0x86, 255), &l2),
            Err(Sense::invalid_cdb_field(2, Some(7)))
        );
        // Buildable but not listed.
        assert_eq!(
            inq(&cdb(true, 0xB2, 255), &l2),
            Err(Sense::invalid_cdb_field(2, Some(7)))
        );
    }

    #[test]
    fn vpd_00_and_80() {
        let d = inq(&cdb(true, 0, 255), &lun()).unwrap();
        assert_eq!(d, [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]);
        let d = inq(&cdb(true, 0x80, 255), &lun()).unwrap();
        assert_eq!(&d[..4], &[0, 0x80, 0, 36]);
        assert_eq!(&d[4..], lun().serial);
    }

    /// Splits a VPD 83h page into its designators.
    fn designators(d: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 4;
        while at < d.len() {
            let len = usize::from(d[at + 3]);
            v.push((d[at], d[at + 1], d[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        assert_eq!(at, d.len());
        v
    }

    #[test]
    fn vpd_83() {
        let d = inq(&cdb(true, 0x83, 0xFFFF), &lun()).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        let ds = designators(&d);
        assert_eq!(ds.len(), 5);
        let mut t10 = b"LIO-ORG ".to_vec();
        t10.extend_from_slice(lun().serial);
        assert_eq!(ds[0], (0x02, 0x01, t10));
        assert_eq!(ds[1].0, 0x01);
        assert_eq!(ds[1].1, 0x03);
        assert_eq!(
            ds[1].2,
            [
                0x60, 0x01, 0x40, 0x56, 0xa1, 0xe4, 0xd5, 0x21, 0xc8, 0xf4, 0xb1, 0xa9, 0xe2, 0xb0,
                0x12, 0x34
            ]
        );
        assert_eq!(ds[2].0, 0x53);
        assert_eq!(ds[2].1, 0x98);
        assert_eq!(ds[2].2.len() % 4, 0);
        assert!(ds[2]
            .2
            .starts_with(b"iqn.2025-01.org.example:t1,t,0x0001\0"));
        assert_eq!(ds[3], (0x51, 0x94, [0, 0, 1, 2].to_vec()));
        assert_eq!(ds[4], (0x51, 0x95, [0, 0, 0, 3].to_vec()));

        let mut p = port();
        p.port_name = None;
        p.target_name = Some(b"iqn.x");
        let mut b = [0u8; 512];
        let n = vpd_device_id(&lun(), &p, &mut b);
        let ds = designators(&b[..n]);
        assert_eq!(ds.len(), 5);
        assert_eq!(ds[4], (0x53, 0xA8, b"iqn.x\0\0\0".to_vec()));
    }

    #[test]
    fn naa_mapping() {
        // Hex serials map digit by digit (LIO compatible).
        let d = naa_designator(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            d,
            [
                0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34,
                0x56, 0x78
            ]
        );
        let d = naa_designator(b"abc");
        assert_eq!(&d[..6], &[0x60, 0x01, 0x40, 0x5a, 0xbc, 0x00]);
        // Text serials hash: stable, distinct, and prefix-sensitive.
        let a = naa_designator(b"disk0");
        assert_eq!(a, naa_designator(b"disk0"));
        assert_ne!(a, naa_designator(b"disk1"));
        assert_ne!(a, naa_designator(b"0disk"));
        assert_eq!(&a[..3], &[0x60, 0x01, 0x40]);
        assert_eq!(a[3] >> 4, 0x5);
        // Edge cases never panic.
        let _ = naa_designator(b"");
        let _ = naa_designator(b"---");
        let _ = naa_designator(&[0xFF; 300]);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let s = std::format!("lun-{i}");
            assert!(seen.insert(naa_designator(s.as_bytes())));
        }
    }

    #[test]
    fn long_names_and_serials_are_cut() {
        let long = [b'a'; 400];
        let mut l = lun();
        l.serial = &long;
        let mut p = port();
        p.port_name = Some(&long);
        let mut b = [0u8; 2048];
        let n = vpd_device_id(&l, &p, &mut b);
        let ds = designators(&b[..n]);
        assert_eq!(ds[0].2.len(), 255);
        assert_eq!(ds[2].2.len(), 252);
        assert_eq!(ds[2].2[251], 0);
        let n = vpd_serial(&l, &mut b);
        assert_eq!(n, 404);
    }

    #[test]
    fn vpd_b0_b1_b2() {
        let d = inq(&cdb(true, 0xB0, 255), &lun()).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(&d[..4], &[0, 0xB0, 0, 0x3C]);
        assert_eq!(d[4], 1);
        assert_eq!(d[5], 1);
        assert_eq!(&d[6..8], &[0, 8]);
        assert_eq!(&d[8..12], &[0, 0, 0x20, 0]);
        assert_eq!(&d[12..16], &[0, 0, 1, 0]);
        assert_eq!(&d[20..24], &[0xFF; 4]);
        assert_eq!(&d[24..28], &[0, 0, 0, 1]);
        assert_eq!(&d[28..32], &[0, 0, 0, 8]);
        assert_eq!(&d[32..36], &[0x80, 0, 0, 0]);
        assert_eq!(&d[36..44], &[0, 0, 0, 0, 0, 1, 0, 0]);
        let mut l = lun();
        l.block_limits.unmap_alignment = Some(0x8000_0000);
        let d = inq(&cdb(true, 0xB0, 255), &l).unwrap();
        assert_eq!(&d[32..36], &[0, 0, 0, 0]);

        let d = inq(&cdb(true, 0xB1, 255), &lun()).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(&d[..6], &[0, 0xB1, 0, 0x3C, 0, 1]);
        l.non_rotating = false;
        let d = inq(&cdb(true, 0xB1, 255), &l).unwrap();
        assert_eq!(&d[4..6], &[0, 0]);

        let d = inq(&cdb(true, 0xB2, 255), &lun()).unwrap();
        assert_eq!(d, [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        l.provisioning = Provisioning::default();
        let d = inq(&cdb(true, 0xB2, 255), &l).unwrap();
        assert_eq!(d, [0, 0xB2, 0, 4, 0, 0, 0, 0]);
        l.provisioning.write_same_10 = true;
        let d = inq(&cdb(true, 0xB2, 255), &l).unwrap();
        assert_eq!(d[5], 0x20);
        l.qualifier = 1;
        let d = inq(&cdb(true, 0xB2, 255), &l).unwrap();
        assert_eq!(d[0], 0x20);
    }

    fn rtpg_cdb(format: u8, alloc: u32) -> [u8; 12] {
        let a = alloc.to_be_bytes();
        [
            0xA3,
            (format << 5) | 0x0A,
            0,
            0,
            0,
            0,
            a[0],
            a[1],
            a[2],
            a[3],
            0,
            0,
        ]
    }

    fn groups() -> [PortGroup<'static>; 2] {
        [
            PortGroup::ctl(2, AccessState::ActiveOptimized, &[1, 2]),
            PortGroup::ctl(3, AccessState::Standby, &[129]),
        ]
    }

    #[test]
    fn rtpg_length_only() {
        let mut b = [0u8; 256];
        let r = report_target_port_groups(&rtpg_cdb(0, 256), &groups(), &mut b).unwrap();
        assert_eq!(r.len, 4 + 8 + 8 + 8 + 4);
        assert_eq!(r.full, r.len);
        assert_eq!(&b[..4], &[0, 0, 0, 28]);
        assert_eq!(&b[4..12], &[0x00, 0x8F, 0, 2, 0, 2, 0, 2]);
        assert_eq!(&b[12..20], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(&b[20..28], &[0x02, 0x8F, 0, 3, 0, 2, 0, 1]);
        assert_eq!(&b[28..32], &[0, 0, 0, 129]);
    }

    #[test]
    fn rtpg_extended() {
        let mut b = [0u8; 256];
        let r = report_target_port_groups(&rtpg_cdb(1, 256), &groups(), &mut b).unwrap();
        assert_eq!(r.len, 8 + 16 + 12);
        assert_eq!(&b[..8], &[0, 0, 0, 32, 0x10, 0, 0, 0]);
        assert_eq!(&b[8..12], &[0x00, 0x8F, 0, 2]);
        let n = build_rtpg(
            &groups(),
            RtpgFormat::Extended { transition_time: 9 },
            &mut b,
        );
        assert_eq!(n, 36);
        assert_eq!(b[5], 9);
        let pref = [PortGroup {
            pref: true,
            ..PortGroup::ctl(1, AccessState::Transitioning, &[])
        }];
        let n = build_rtpg(&pref, RtpgFormat::LengthOnly, &mut b);
        assert_eq!(n, 12);
        assert_eq!(&b[..12], &[0, 0, 0, 8, 0x8F, 0x8F, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn rtpg_validation_and_clipping() {
        let mut b = [0u8; 256];
        assert_eq!(
            report_target_port_groups(&rtpg_cdb(2, 256), &groups(), &mut b),
            Err(Sense::invalid_cdb_field(1, Some(7)))
        );
        assert_eq!(
            report_target_port_groups(&[0xA3, 0x0A], &groups(), &mut b),
            Err(Sense::invalid_cdb_field(0, None))
        );
        let r = report_target_port_groups(&rtpg_cdb(0, 2), &groups(), &mut b).unwrap();
        assert_eq!(r, DataIn { len: 2, full: 32 });
        let r =
            report_target_port_groups(&rtpg_cdb(0, 0xFFFF_FFFF), &groups(), &mut b[..10]).unwrap();
        assert_eq!(r, DataIn { len: 10, full: 32 });
        let r = report_target_port_groups(&rtpg_cdb(0, 100), &[], &mut b).unwrap();
        assert_eq!(r.len, 4);
        assert_eq!(&b[..4], &[0, 0, 0, 0]);
    }

    #[test]
    fn rtpg_port_count_saturates() {
        let many: Vec<u16> = (0..300).collect();
        let g = [PortGroup::ctl(2, AccessState::ActiveOptimized, &many)];
        let mut b = std::vec![0u8; 2048];
        let n = build_rtpg(&g, RtpgFormat::LengthOnly, &mut b);
        assert_eq!(n, 4 + 8 + 255 * 4);
        assert_eq!(b[11], 255);
    }
}
