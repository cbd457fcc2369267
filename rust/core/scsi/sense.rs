// SPDX-License-Identifier: GPL-2.0

//! Sense data built by the backstore (SPC-4 §4.5).
//!
//! The core's unit attention, ALUA and PR sense helpers are not exported to
//! modules, so the backstore builds its own sense data and hands it to
//! `transport_copy_sense_to_cmd()` (lio-and-rust-for-linux-7.3.md §A.1).
//! [`Sense`] carries a sense key, ASC/ASCQ and the optional INFORMATION and
//! SENSE KEY SPECIFIC fields; it renders as fixed format (response code 70h)
//! or descriptor format (72h).

use super::out::Out;

/// Length of fixed-format sense data as built here (additional length 10).
pub(crate) const FIXED_LEN: usize = 18;

/// Largest descriptor-format sense built here: 8-byte header, information
/// descriptor (12) and sense-key-specific descriptor (8).
pub(crate) const DESCRIPTOR_MAX_LEN: usize = 28;

/// Sense keys (SPC-4 table 27).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SenseKey {
    /// 0h NO SENSE.
    NoSense = 0x0,
    /// 1h RECOVERED ERROR.
    RecoveredError = 0x1,
    /// 2h NOT READY.
    NotReady = 0x2,
    /// 3h MEDIUM ERROR.
    MediumError = 0x3,
    /// 4h HARDWARE ERROR.
    HardwareError = 0x4,
    /// 5h ILLEGAL REQUEST.
    IllegalRequest = 0x5,
    /// 6h UNIT ATTENTION.
    UnitAttention = 0x6,
    /// 7h DATA PROTECT.
    DataProtect = 0x7,
    /// Bh ABORTED COMMAND.
    AbortedCommand = 0xB,
    /// Eh MISCOMPARE.
    Miscompare = 0xE,
}

impl SenseKey {
    /// The key for a 4-bit wire value, `None` for keys this module never
    /// builds.
    pub(crate) fn from_u8(v: u8) -> Option<SenseKey> {
        Some(match v & 0x0F {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0xB => SenseKey::AbortedCommand,
            0xE => SenseKey::Miscompare,
            _ => return None,
        })
    }
}

/// The SENSE KEY SPECIFIC field (SPC-4 §4.5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sks {
    /// Not present (SKSV = 0).
    None,
    /// Field pointer, for ILLEGAL REQUEST.
    Field {
        /// C/D bit: `true` when the field is in the CDB, `false` when it is
        /// in the parameter list.
        cdb: bool,
        /// Byte offset of the field (its most significant byte).
        byte: u16,
        /// Bit 0..=7 of the field's most significant bit, when known
        /// (BPV = 1). Values above 7 are masked to 3 bits.
        bit: Option<u8>,
    },
    /// Actual retry count, for HARDWARE, MEDIUM and RECOVERED ERROR (CTL
    /// puts its HA `port_status` here, freebsd-ctl-ha-behaviour.md §1.3).
    RetryCount(u16),
}

impl Sks {
    /// The 3 bytes of the field, or `None` when SKSV is 0.
    fn bytes(self) -> Option<[u8; 3]> {
        match self {
            Sks::None => None,
            Sks::Field { cdb, byte, bit } => {
                let mut b0 = 0x80u8;
                if cdb {
                    b0 |= 0x40;
                }
                if let Some(bit) = bit {
                    b0 |= 0x08 | (bit & 0x07);
                }
                let [hi, lo] = byte.to_be_bytes();
                Some([b0, hi, lo])
            }
            Sks::RetryCount(n) => {
                let [hi, lo] = n.to_be_bytes();
                Some([0x80, hi, lo])
            }
        }
    }
}

/// Which sense data format to build (`D_SENSE` in the control mode page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SenseFormat {
    /// Fixed format, response code 70h.
    Fixed,
    /// Descriptor format, response code 72h.
    Descriptor,
}

/// A sense reason: key, ASC, ASCQ and optional fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sense {
    /// Sense key.
    pub(crate) key: SenseKey,
    /// Additional sense code.
    pub(crate) asc: u8,
    /// Additional sense code qualifier.
    pub(crate) ascq: u8,
    /// Sense key specific field.
    pub(crate) sks: Sks,
    /// INFORMATION field (for example the failing LBA, or the miscompare
    /// offset of COMPARE AND WRITE).
    pub(crate) info: Option<u64>,
}

impl Sense {
    /// A reason with no optional fields.
    pub(crate) const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            sks: Sks::None,
            info: None,
        }
    }

    /// A UNIT ATTENTION with `asc`/`ascq`.
    pub(crate) const fn unit_attention(asc: u8, ascq: u8) -> Sense {
        Sense::new(SenseKey::UnitAttention, asc, ascq)
    }

    // --- NOT READY: ALUA refusals (freebsd-ctl-ha-behaviour.md §1.3, §1.6) ---

    /// NOT READY, 04h/0Ah: asymmetric access state transition.
    pub(crate) const ALUA_TRANSITIONING: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0A);
    /// NOT READY, 04h/0Bh: target port in standby state.
    pub(crate) const ALUA_STANDBY: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0B);
    /// NOT READY, 04h/0Ch: target port in unavailable state.
    pub(crate) const ALUA_UNAVAILABLE: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0C);

    // --- UNIT ATTENTION ---

    /// UNIT ATTENTION, 29h/00h: power on, reset, or bus device reset occurred.
    pub(crate) const POWER_ON_RESET: Sense = Sense::new(SenseKey::UnitAttention, 0x29, 0x00);
    /// UNIT ATTENTION, 29h/03h: bus device reset function occurred (LUN reset).
    pub(crate) const BUS_DEVICE_RESET: Sense = Sense::new(SenseKey::UnitAttention, 0x29, 0x03);
    /// UNIT ATTENTION, 2Ah/01h: mode parameters changed.
    pub(crate) const MODE_PARAMETERS_CHANGED: Sense =
        Sense::new(SenseKey::UnitAttention, 0x2A, 0x01);
    /// UNIT ATTENTION, 2Ah/03h: reservations preempted.
    pub(crate) const RESERVATIONS_PREEMPTED: Sense =
        Sense::new(SenseKey::UnitAttention, 0x2A, 0x03);
    /// UNIT ATTENTION, 2Ah/04h: reservations released.
    pub(crate) const RESERVATIONS_RELEASED: Sense = Sense::new(SenseKey::UnitAttention, 0x2A, 0x04);
    /// UNIT ATTENTION, 2Ah/05h: registrations preempted.
    pub(crate) const REGISTRATIONS_PREEMPTED: Sense =
        Sense::new(SenseKey::UnitAttention, 0x2A, 0x05);
    /// UNIT ATTENTION, 2Ah/06h: asymmetric access state changed.
    pub(crate) const ASYMMETRIC_ACCESS_STATE_CHANGED: Sense =
        Sense::new(SenseKey::UnitAttention, 0x2A, 0x06);
    /// UNIT ATTENTION, 2Ah/09h: capacity data has changed.
    pub(crate) const CAPACITY_DATA_CHANGED: Sense = Sense::new(SenseKey::UnitAttention, 0x2A, 0x09);
    /// UNIT ATTENTION, 3Fh/03h: inquiry data has changed.
    pub(crate) const INQUIRY_DATA_CHANGED: Sense = Sense::new(SenseKey::UnitAttention, 0x3F, 0x03);
    /// UNIT ATTENTION, 3Fh/0Eh: reported LUNs data has changed.
    pub(crate) const REPORTED_LUNS_CHANGED: Sense = Sense::new(SenseKey::UnitAttention, 0x3F, 0x0E);

    // --- ILLEGAL REQUEST ---

    /// ILLEGAL REQUEST, 1Ah/00h: parameter list length error.
    pub(crate) const PARAMETER_LIST_LENGTH_ERROR: Sense =
        Sense::new(SenseKey::IllegalRequest, 0x1A, 0x00);
    /// ILLEGAL REQUEST, 20h/00h: invalid command operation code.
    pub(crate) const INVALID_OPCODE: Sense = Sense::new(SenseKey::IllegalRequest, 0x20, 0x00);
    /// ILLEGAL REQUEST, 21h/00h: logical block address out of range.
    pub(crate) const LBA_OUT_OF_RANGE: Sense = Sense::new(SenseKey::IllegalRequest, 0x21, 0x00);
    /// ILLEGAL REQUEST, 24h/00h: invalid field in CDB (no field pointer; see
    /// [`Sense::invalid_cdb_field`]).
    pub(crate) const INVALID_FIELD_IN_CDB: Sense = Sense::new(SenseKey::IllegalRequest, 0x24, 0x00);
    /// ILLEGAL REQUEST, 26h/00h: invalid field in parameter list (no field
    /// pointer; see [`Sense::invalid_param_field`]).
    pub(crate) const INVALID_FIELD_IN_PARAMETER_LIST: Sense =
        Sense::new(SenseKey::IllegalRequest, 0x26, 0x00);
    /// ILLEGAL REQUEST, 26h/04h: invalid release of persistent reservation.
    pub(crate) const INVALID_RELEASE_OF_PR: Sense =
        Sense::new(SenseKey::IllegalRequest, 0x26, 0x04);
    /// ILLEGAL REQUEST, 39h/00h: saving parameters not supported (MODE
    /// SENSE with PC = 11b).
    pub(crate) const SAVING_PARAMETERS_NOT_SUPPORTED: Sense =
        Sense::new(SenseKey::IllegalRequest, 0x39, 0x00);
    /// ILLEGAL REQUEST, 55h/04h: insufficient registration resources.
    pub(crate) const INSUFFICIENT_REGISTRATION_RESOURCES: Sense =
        Sense::new(SenseKey::IllegalRequest, 0x55, 0x04);

    // --- media and transport ---

    /// MEDIUM ERROR, 11h/00h: unrecovered read error.
    pub(crate) const UNRECOVERED_READ_ERROR: Sense = Sense::new(SenseKey::MediumError, 0x11, 0x00);
    /// MEDIUM ERROR, 0Ch/00h: write error.
    pub(crate) const WRITE_ERROR: Sense = Sense::new(SenseKey::MediumError, 0x0C, 0x00);
    /// DATA PROTECT, 27h/00h: write protected.
    pub(crate) const WRITE_PROTECTED: Sense = Sense::new(SenseKey::DataProtect, 0x27, 0x00);
    /// MISCOMPARE, 1Dh/00h: miscompare during verify operation (COMPARE AND
    /// WRITE; add the offset with [`Sense::with_info`]).
    pub(crate) const MISCOMPARE: Sense = Sense::new(SenseKey::Miscompare, 0x1D, 0x00);
    /// ABORTED COMMAND, 08h/00h: logical unit communication failure. ABORTED
    /// COMMAND is chosen so that initiators retry (the peer link failed).
    pub(crate) const LUN_COMMUNICATION_FAILURE: Sense =
        Sense::new(SenseKey::AbortedCommand, 0x08, 0x00);
    /// HARDWARE ERROR, 44h/00h: internal target failure (CTL's HA transfer
    /// error; add the retry count with [`Sense::with_retry_count`]).
    pub(crate) const INTERNAL_TARGET_FAILURE: Sense =
        Sense::new(SenseKey::HardwareError, 0x44, 0x00);

    /// INVALID FIELD IN CDB pointing at `byte` (and `bit`, if known) of the
    /// CDB.
    pub(crate) const fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Sense {
        Sense::INVALID_FIELD_IN_CDB.with_field(true, byte, bit)
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at `byte` (and `bit`, if
    /// known) of the parameter list.
    pub(crate) const fn invalid_param_field(byte: u16, bit: Option<u8>) -> Sense {
        Sense::INVALID_FIELD_IN_PARAMETER_LIST.with_field(false, byte, bit)
    }

    /// This reason with a field pointer.
    pub(crate) const fn with_field(self, cdb: bool, byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            sks: Sks::Field { cdb, byte, bit },
            ..self
        }
    }

    /// This reason with an actual retry count.
    pub(crate) const fn with_retry_count(self, n: u16) -> Sense {
        Sense {
            sks: Sks::RetryCount(n),
            ..self
        }
    }

    /// This reason with an INFORMATION field.
    pub(crate) const fn with_info(self, info: u64) -> Sense {
        Sense {
            info: Some(info),
            ..self
        }
    }

    /// Whether key, ASC and ASCQ equal `other`'s (ignores optional fields).
    pub(crate) fn same_reason(&self, other: &Sense) -> bool {
        self.key == other.key && self.asc == other.asc && self.ascq == other.ascq
    }

    /// Builds sense data in `fmt` into `buf`; returns the untruncated length.
    pub(crate) fn build(&self, fmt: SenseFormat, buf: &mut [u8]) -> usize {
        match fmt {
            SenseFormat::Fixed => self.build_fixed(buf),
            SenseFormat::Descriptor => self.build_descriptor(buf),
        }
    }

    /// Builds fixed-format sense data (70h, current error) into `buf`;
    /// returns the untruncated length, [`FIXED_LEN`].
    ///
    /// An INFORMATION value that does not fit the 4-byte field is left out
    /// (VALID = 0), as SPC-4 §4.5.3 requires.
    pub(crate) fn build_fixed(&self, buf: &mut [u8]) -> usize {
        let mut o = Out::new(buf);
        let info32 = self.info.and_then(|i| u32::try_from(i).ok());
        o.u8(if info32.is_some() { 0xF0 } else { 0x70 });
        o.u8(0);
        o.u8(self.key as u8);
        o.be32(info32.unwrap_or(0));
        o.u8(10); // additional sense length: bytes 8..18
        o.be32(0); // command-specific information
        o.u8(self.asc);
        o.u8(self.ascq);
        o.u8(0); // field replaceable unit code
        o.bytes(&self.sks.bytes().unwrap_or([0; 3]));
        o.len()
    }

    /// Builds descriptor-format sense data (72h, current error) into `buf`
    /// with an information descriptor (type 00h) and a sense key specific
    /// descriptor (type 02h) when those fields are set; returns the
    /// untruncated length.
    pub(crate) fn build_descriptor(&self, buf: &mut [u8]) -> usize {
        let mut o = Out::new(buf);
        o.u8(0x72);
        o.u8(self.key as u8);
        o.u8(self.asc);
        o.u8(self.ascq);
        o.zeros(3);
        o.u8(0); // additional sense length, set below
        if let Some(info) = self.info {
            o.u8(0x00);
            o.u8(0x0A);
            o.u8(0x80); // VALID
            o.u8(0);
            o.be64(info);
        }
        if let Some(sks) = self.sks.bytes() {
            o.u8(0x02);
            o.u8(0x06);
            o.zeros(2);
            o.bytes(&sks);
            o.u8(0);
        }
        let n = o.len();
        // At most 20 bytes of descriptors, so this never saturates.
        o.set(7, u8::try_from(n.saturating_sub(8)).unwrap_or(u8::MAX));
        n
    }

    /// Key, ASC and ASCQ of sense data in either format (current or
    /// deferred); `None` when `buf` is too short or not sense data. Optional
    /// fields are not decoded.
    pub(crate) fn parse(buf: &[u8]) -> Option<Sense> {
        let code = buf.first()? & 0x7F;
        let (k, asc, ascq) = match code {
            0x70 | 0x71 => (*buf.get(2)?, *buf.get(12)?, *buf.get(13)?),
            0x72 | 0x73 => (*buf.get(1)?, *buf.get(2)?, *buf.get(3)?),
            _ => return None,
        };
        Some(Sense::new(SenseKey::from_u8(k)?, asc, ascq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_reference() {
        let cases: &[(Sense, u8, u8, u8)] = &[
            (Sense::ALUA_STANDBY, 2, 0x04, 0x0B),
            (Sense::ALUA_UNAVAILABLE, 2, 0x04, 0x0C),
            (Sense::ALUA_TRANSITIONING, 2, 0x04, 0x0A),
            (Sense::ASYMMETRIC_ACCESS_STATE_CHANGED, 6, 0x2A, 0x06),
            (Sense::RESERVATIONS_PREEMPTED, 6, 0x2A, 0x03),
            (Sense::RESERVATIONS_RELEASED, 6, 0x2A, 0x04),
            (Sense::REGISTRATIONS_PREEMPTED, 6, 0x2A, 0x05),
            (Sense::BUS_DEVICE_RESET, 6, 0x29, 0x03),
            (Sense::INVALID_FIELD_IN_CDB, 5, 0x24, 0x00),
            (Sense::INVALID_OPCODE, 5, 0x20, 0x00),
            (Sense::INVALID_FIELD_IN_PARAMETER_LIST, 5, 0x26, 0x00),
            (Sense::PARAMETER_LIST_LENGTH_ERROR, 5, 0x1A, 0x00),
            (Sense::LBA_OUT_OF_RANGE, 5, 0x21, 0x00),
            (Sense::UNRECOVERED_READ_ERROR, 3, 0x11, 0x00),
            (Sense::WRITE_ERROR, 3, 0x0C, 0x00),
            (Sense::WRITE_PROTECTED, 7, 0x27, 0x00),
            (Sense::MISCOMPARE, 0xE, 0x1D, 0x00),
            (Sense::LUN_COMMUNICATION_FAILURE, 0xB, 0x08, 0x00),
            (Sense::INSUFFICIENT_REGISTRATION_RESOURCES, 5, 0x55, 0x04),
            (Sense::SAVING_PARAMETERS_NOT_SUPPORTED, 5, 0x39, 0x00),
            (Sense::INTERNAL_TARGET_FAILURE, 4, 0x44, 0x00),
        ];
        for (s, k, asc, ascq) in cases {
            assert_eq!((s.key as u8, s.asc, s.ascq), (*k, *asc, *ascq), "{s:?}");
            let mut b = [0u8; 32];
            let n = s.build_fixed(&mut b);
            assert_eq!(n, FIXED_LEN);
            assert_eq!(Sense::parse(&b), Some(*s));
            let n = s.build_descriptor(&mut b);
            assert_eq!(n, 8);
            assert_eq!(Sense::parse(&b), Some(*s));
        }
    }

    #[test]
    fn fixed_layout_with_field_pointer() {
        let s = Sense::invalid_cdb_field(2, Some(7));
        let mut b = [0xFFu8; 18];
        assert_eq!(s.build(SenseFormat::Fixed, &mut b), 18);
        assert_eq!(
            b,
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCF, 0x00, 0x02]
        );
        let s = Sense::invalid_param_field(0x0114, None);
        s.build_fixed(&mut b);
        assert_eq!(&b[15..18], &[0x80, 0x01, 0x14]);
        let s = Sense::invalid_param_field(20, Some(0x0B));
        s.build_fixed(&mut b);
        assert_eq!(&b[15..18], &[0x8B, 0x00, 20]);
    }

    #[test]
    fn fixed_information_field() {
        let mut b = [0u8; 18];
        Sense::MISCOMPARE.with_info(0x1234).build_fixed(&mut b);
        assert_eq!(b[0], 0xF0);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        Sense::UNRECOVERED_READ_ERROR
            .with_info(0x1_0000_0000)
            .build_fixed(&mut b);
        assert_eq!(b[0], 0x70);
        assert_eq!(&b[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn retry_count() {
        let mut b = [0u8; 18];
        Sense::INTERNAL_TARGET_FAILURE
            .with_retry_count(31337)
            .build_fixed(&mut b);
        assert_eq!(&b[15..18], &[0x80, 0x7A, 0x69]);
    }

    #[test]
    fn descriptor_layout() {
        let s = Sense::UNRECOVERED_READ_ERROR
            .with_info(0x0102_0304_0506_0708)
            .with_field(true, 9, None);
        let mut b = [0u8; DESCRIPTOR_MAX_LEN];
        assert_eq!(s.build(SenseFormat::Descriptor, &mut b), DESCRIPTOR_MAX_LEN);
        assert_eq!(&b[..8], &[0x72, 3, 0x11, 0, 0, 0, 0, 20]);
        assert_eq!(&b[8..20], &[0, 0x0A, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[20..28], &[2, 6, 0, 0, 0xC0, 0, 9, 0]);
    }

    #[test]
    fn truncation_reports_full_length() {
        let s = Sense::invalid_cdb_field(1, Some(1)).with_info(5);
        let mut b = [0u8; 4];
        assert_eq!(s.build_fixed(&mut b), 18);
        assert_eq!(b, [0xF0, 0, 5, 0]);
        assert_eq!(s.build_descriptor(&mut b), DESCRIPTOR_MAX_LEN);
        assert_eq!(b, [0x72, 5, 0x24, 0]);
        assert_eq!(s.build_descriptor(&mut []), DESCRIPTOR_MAX_LEN);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70, 0, 5]), None);
        assert_eq!(Sense::parse(&[0x00; 18]), None);
        assert_eq!(Sense::parse(&[0x72, 0x09, 0, 0]), None);
        assert_eq!(
            Sense::parse(&[0x73, 0x06, 0x2A, 0x06]),
            Some(Sense::ASYMMETRIC_ACCESS_STATE_CHANGED)
        );
    }

    #[test]
    fn same_reason_ignores_fields() {
        assert!(Sense::invalid_cdb_field(3, None).same_reason(&Sense::INVALID_FIELD_IN_CDB));
        assert!(!Sense::ALUA_STANDBY.same_reason(&Sense::ALUA_UNAVAILABLE));
    }
}
