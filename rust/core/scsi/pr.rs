// SPDX-License-Identifier: GPL-2.0

//! Persistent reservations (SPC-4 §5.13, PERSISTENT RESERVE IN §6.15 and
//! OUT §6.16) owned by the backstore under `TRANSPORT_FLAG_PASSTHROUGH_PGR`
//! (lio-and-rust-for-linux-7.3.md §A.5).
//!
//! [`PrState`] is the state of one LUN: registrations in a fixed array of
//! [`MAX_REGISTRANTS`], the reservation and the PR generation. I_T nexuses
//! are opaque [`NexusId`]s chosen by the caller; a registration must outlive
//! the session that made it, so the id has to stay the same for the same
//! (initiator port, target port) pair across logins and on both nodes.
//!
//! PR OUT never aborts or queues anything itself: it reports, through a
//! callback, the unit attentions to establish and the nexuses whose tasks
//! PREEMPT AND ABORT must abort ([`PrEvent`]). Replaying the same
//! [`ProutRequest`] on the peer gives the same state (the HA link's
//! incremental replication); [`PrState::encode`] / [`PrState::decode_into`]
//! move the whole state (the link-up snapshot, freebsd-ctl-ha-behaviour.md
//! §7.3).
//!
//! Not supported (reported so by REPORT CAPABILITIES): SPEC_I_PT, ALL_TG_PT,
//! APTPL, REGISTER AND MOVE, REPLACE LOST RESERVATION. Only LU scope exists.

use core::fmt;

use super::opcode as op;
use super::out::{sat32, Out};
use super::sense::{Sense, SenseKey};
use super::{be16, be32, be64, byte, DataIn};

/// Capacity of the registration table of one LUN.
pub(crate) const MAX_REGISTRANTS: usize = 128;

/// PERSISTENT RESERVE OUT parameter list length (no SPEC_I_PT).
pub(crate) const PARAM_LIST_LEN: usize = 24;

/// Largest TransportID READ FULL STATUS reports (an iSCSI name of 223
/// bytes with its ISID fits).
pub(crate) const MAX_TRANSPORT_ID: usize = 264;

/// An I_T nexus handle assigned by the caller.
pub(crate) type NexusId = u64;

/// The I_T nexus a command arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nexus {
    /// Caller-assigned id, stable for the (initiator port, target port) pair.
    pub(crate) id: NexusId,
    /// Relative target port identifier of the target port.
    pub(crate) rel_port: u16,
}

/// Persistent reservation types (SPC-4 table 169).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PrType {
    /// 1h Write Exclusive.
    WriteExclusive = 0x1,
    /// 3h Exclusive Access.
    ExclusiveAccess = 0x3,
    /// 5h Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly = 0x5,
    /// 6h Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly = 0x6,
    /// 7h Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants = 0x7,
    /// 8h Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants = 0x8,
}

impl PrType {
    /// Every type, in code order.
    pub(crate) const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    /// The type for a 4-bit TYPE code.
    pub(crate) fn from_u8(v: u8) -> Option<PrType> {
        PrType::ALL.iter().copied().find(|t| *t as u8 == v)
    }

    /// The TYPE code.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// All Registrants types: every registrant is a holder.
    pub(crate) fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants Only types.
    pub(crate) fn registrants_only(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
        )
    }

    /// Exclusive Access types (reads conflict too).
    pub(crate) fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// One registered I_T nexus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    /// The registered I_T nexus.
    pub(crate) nexus: Nexus,
    /// Its reservation key (never 0).
    pub(crate) key: u64,
}

impl Registration {
    /// Filler for unused slots.
    const EMPTY: Registration = Registration {
        nexus: Nexus { id: 0, rel_port: 0 },
        key: 0,
    };
}

/// The persistent reservation of a LUN (LU scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// Its type.
    pub(crate) ty: PrType,
    /// The holder for non-All-Registrants types (always registered); 0 and
    /// unused for All Registrants types, where every registrant holds it.
    pub(crate) holder: NexusId,
}

/// PERSISTENT RESERVE OUT service actions handled here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProutAction {
    /// 00h REGISTER.
    Register = 0x0,
    /// 01h RESERVE.
    Reserve = 0x1,
    /// 02h RELEASE.
    Release = 0x2,
    /// 03h CLEAR.
    Clear = 0x3,
    /// 04h PREEMPT.
    Preempt = 0x4,
    /// 05h PREEMPT AND ABORT.
    PreemptAndAbort = 0x5,
    /// 06h REGISTER AND IGNORE EXISTING KEY.
    RegisterAndIgnore = 0x6,
}

impl ProutAction {
    /// The action for a service action code.
    pub(crate) fn from_u8(v: u8) -> Option<ProutAction> {
        Some(match v {
            0x0 => ProutAction::Register,
            0x1 => ProutAction::Reserve,
            0x2 => ProutAction::Release,
            0x3 => ProutAction::Clear,
            0x4 => ProutAction::Preempt,
            0x5 => ProutAction::PreemptAndAbort,
            0x6 => ProutAction::RegisterAndIgnore,
            _ => return None,
        })
    }

    /// Whether the CDB's SCOPE and TYPE fields are used.
    fn uses_type(self) -> bool {
        matches!(
            self,
            ProutAction::Reserve
                | ProutAction::Release
                | ProutAction::Preempt
                | ProutAction::PreemptAndAbort
        )
    }
}

impl ProutRequest {
    /// Service action and type codes, as the interlink's PrOut carries
    /// them (type 0 when the action takes none).
    pub(crate) fn wire_codes(&self) -> (u8, u8) {
        (self.action as u8, self.ty.map_or(0, PrType::code))
    }

    /// The request a PrOut describes; `None` if its codes do not go
    /// together (a type where none is taken, or none where one is).
    pub(crate) fn from_wire(action: u8, ty: u8, key: u64, sa_key: u64) -> Option<ProutRequest> {
        let action = ProutAction::from_u8(action)?;
        let ty = match (action.uses_type(), ty) {
            (true, t) => Some(PrType::from_u8(t)?),
            (false, 0) => None,
            (false, _) => return None,
        };
        Some(ProutRequest { action, ty, key, sa_key })
    }
}

/// A parsed, validated PERSISTENT RESERVE OUT command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProutRequest {
    /// Service action.
    pub(crate) action: ProutAction,
    /// TYPE, for RESERVE, RELEASE, PREEMPT and PREEMPT AND ABORT.
    pub(crate) ty: Option<PrType>,
    /// RESERVATION KEY.
    pub(crate) key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub(crate) sa_key: u64,
}

impl ProutRequest {
    /// Parses and checks a PERSISTENT RESERVE OUT CDB and its parameter
    /// list (`params`, the data-out buffer). Refusals, in order:
    ///
    /// * CDB shorter than 10 bytes: INVALID FIELD IN CDB (byte 0);
    /// * REGISTER AND MOVE, REPLACE LOST RESERVATION or a reserved service
    ///   action: INVALID FIELD IN CDB (byte 1 bit 4);
    /// * SCOPE other than LU (byte 2 bit 7) or a reserved TYPE (byte 2
    ///   bit 3) where they are used: INVALID FIELD IN CDB;
    /// * parameter list shorter than 24 bytes: PARAMETER LIST LENGTH ERROR;
    /// * SPEC_I_PT (byte 20 bit 3), or ALL_TG_PT (bit 2) or APTPL (bit 0)
    ///   with REGISTER / REGISTER AND IGNORE: INVALID FIELD IN PARAMETER
    ///   LIST, since none is supported;
    /// * parameter list length other than 24: PARAMETER LIST LENGTH ERROR.
    pub(crate) fn parse(cdb: &[u8], params: &[u8]) -> Result<ProutRequest, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_cdb_field(0, None));
        }
        let action = ProutAction::from_u8(op::service_action(cdb))
            .ok_or(Sense::invalid_cdb_field(1, Some(4)))?;
        let scope_type = byte(cdb, 2);
        let ty = if action.uses_type() {
            if scope_type >> 4 != 0 {
                return Err(Sense::invalid_cdb_field(2, Some(7)));
            }
            Some(PrType::from_u8(scope_type & 0x0F).ok_or(Sense::invalid_cdb_field(2, Some(3)))?)
        } else {
            None
        };
        let list_len = usize::try_from(be32(cdb, 5).unwrap_or(0)).unwrap_or(usize::MAX);
        let avail = params.len().min(list_len);
        if avail < PARAM_LIST_LEN {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        let flags = byte(params, 20);
        let register = matches!(
            action,
            ProutAction::Register | ProutAction::RegisterAndIgnore
        );
        if flags & 0x08 != 0 {
            return Err(Sense::invalid_param_field(20, Some(3)));
        }
        if register && flags & 0x04 != 0 {
            return Err(Sense::invalid_param_field(20, Some(2)));
        }
        if register && flags & 0x01 != 0 {
            return Err(Sense::invalid_param_field(20, Some(0)));
        }
        if list_len != PARAM_LIST_LEN {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        Ok(ProutRequest {
            action,
            ty,
            key: be64(params, 0).unwrap_or(0),
            sa_key: be64(params, 8).unwrap_or(0),
        })
    }
}

/// Why PERSISTENT RESERVE OUT failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrError {
    /// Complete with RESERVATION CONFLICT status.
    Conflict,
    /// Complete with CHECK CONDITION and this sense.
    Check(Sense),
}

impl From<Sense> for PrError {
    fn from(s: Sense) -> PrError {
        PrError::Check(s)
    }
}

/// SCSI status codes a PR OUT outcome travels as.
const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK: u8 = 0x02;
const STATUS_CONFLICT: u8 = 0x18;

/// A PR OUT outcome as the interlink's PrOutDone carries it: SCSI status
/// and, for CHECK CONDITION, sense key, ASC and ASCQ.
pub(crate) fn outcome_to_wire(r: Result<(), PrError>) -> (u8, [u8; 3]) {
    match r {
        Ok(()) => (STATUS_GOOD, [0; 3]),
        Err(PrError::Conflict) => (STATUS_CONFLICT, [0; 3]),
        Err(PrError::Check(s)) => (STATUS_CHECK, [s.key as u8, s.asc, s.ascq]),
    }
}

/// The outcome a PrOutDone reports (the inverse of [`outcome_to_wire`]; a
/// sense key this side does not know becomes HARDWARE ERROR).
pub(crate) fn outcome_from_wire(status: u8, sense: [u8; 3]) -> Result<(), PrError> {
    match status {
        STATUS_GOOD => Ok(()),
        STATUS_CONFLICT => Err(PrError::Conflict),
        _ => {
            let [k, asc, ascq] = sense;
            let key = SenseKey::from_u8(k).unwrap_or(SenseKey::HardwareError);
            Err(PrError::Check(Sense::new(key, asc, ascq)))
        }
    }
}

/// Something the caller must do after a successful PR OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrEvent {
    /// Establish this unit attention for the initiator port of `nexus`.
    UnitAttention {
        /// The I_T nexus.
        nexus: NexusId,
        /// RESERVATIONS PREEMPTED, RESERVATIONS RELEASED or REGISTRATIONS
        /// PREEMPTED.
        sense: Sense,
    },
    /// PREEMPT AND ABORT: abort every task of `nexus` (never includes the
    /// PR OUT command's own nexus).
    Abort {
        /// The I_T nexus.
        nexus: NexusId,
    },
}

/// Whether, under a persistent reservation held by someone else, a command
/// is allowed, conflicts only with Exclusive Access types, or conflicts
/// with every type (SPC-4 §5.13.1 table 63, SBC-3 table 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrAccess {
    /// Allowed under every type.
    Allowed,
    /// Conflicts with Exclusive Access types only (reads).
    Read,
    /// Conflicts with every type (writes and anything unknown).
    Write,
}

/// The reservation-conflict class of the command in `cdb`.
///
/// * Allowed: INQUIRY, REPORT LUNS, REQUEST SENSE, TEST UNIT READY, LOG
///   SENSE, READ CAPACITY(10/16), PERSISTENT RESERVE IN/OUT (PR OUT checks
///   itself), MAINTENANCE IN (REPORT TARGET PORT GROUPS etc.), READ MEDIA
///   SERIAL NUMBER, PREVENT ALLOW MEDIUM REMOVAL with PREVENT 0, START STOP
///   UNIT with START 1 and POWER CONDITION 0;
/// * Read: READ(6/10/12/16/32), VERIFY(10/12/16/32), PRE-FETCH, READ
///   BUFFER, MODE SENSE, READ DEFECT DATA, READ LONG, GET LBA STATUS,
///   RECEIVE DIAGNOSTIC RESULTS, RECEIVE COPY RESULTS, READ ATTRIBUTE;
/// * Write: everything else, including WRITE*, WRITE SAME, UNMAP, COMPARE
///   AND WRITE, SYNCHRONIZE CACHE, MODE SELECT, LOG SELECT, FORMAT UNIT,
///   WRITE BUFFER, SEND DIAGNOSTIC, EXTENDED COPY, SET TARGET PORT GROUPS,
///   and RESERVE/RELEASE(6/10) (SPC-4 §5.13.3 with CRH = 1: they conflict
///   unless sent by a holder, or by a registrant under a Registrants Only or
///   All Registrants reservation, in which case the caller completes them
///   with GOOD and does nothing).
pub(crate) fn access_class(cdb: &[u8]) -> PrAccess {
    let Some(&opc) = cdb.first() else {
        return PrAccess::Write;
    };
    match opc {
        op::INQUIRY
        | op::REPORT_LUNS
        | op::REQUEST_SENSE
        | op::TEST_UNIT_READY
        | op::LOG_SENSE
        | op::READ_CAPACITY_10
        | op::PERSISTENT_RESERVE_IN
        | op::PERSISTENT_RESERVE_OUT
        | op::MAINTENANCE_IN => PrAccess::Allowed,
        op::SERVICE_ACTION_IN_12 if op::service_action(cdb) == 0x01 => PrAccess::Allowed,
        op::SERVICE_ACTION_IN_16 => match op::service_action(cdb) {
            op::SA_READ_CAPACITY_16 => PrAccess::Allowed,
            _ => PrAccess::Read, // GET LBA STATUS, READ LONG(16)
        },
        op::PREVENT_ALLOW if byte(cdb, 4) & 0x03 == 0 => PrAccess::Allowed,
        op::START_STOP_UNIT if byte(cdb, 4) & 0xF1 == 0x01 => PrAccess::Allowed,
        op::READ_6
        | op::READ_10
        | op::READ_12
        | op::READ_16
        | op::VERIFY_10
        | op::VERIFY_12
        | op::VERIFY_16
        | op::PRE_FETCH_10
        | op::PRE_FETCH_16
        | op::READ_BUFFER_10
        | op::READ_BUFFER_16
        | op::MODE_SENSE_6
        | op::MODE_SENSE_10
        | op::READ_DEFECT_DATA_10
        | op::READ_LONG_10
        | op::RECEIVE_DIAGNOSTIC
        | op::RECEIVE_COPY_RESULTS
        | op::READ_ATTRIBUTE => PrAccess::Read,
        op::VARIABLE_LENGTH => match be16(cdb, 8) {
            Some(0x0009) | Some(0x000A) => PrAccess::Read, // READ(32), VERIFY(32)
            _ => PrAccess::Write,
        },
        _ => PrAccess::Write,
    }
}

/// Errors of the PR snapshot codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotError {
    /// The output buffer is too small; `need` bytes are required.
    BufferTooSmall {
        /// Bytes required.
        need: usize,
    },
    /// Fewer bytes than the fixed header.
    Truncated {
        /// Bytes present.
        have: usize,
    },
    /// Unknown format version.
    Version(u8),
    /// Unknown flag bits or non-zero reserved fields.
    Reserved,
    /// Invalid reservation type code.
    Type(u8),
    /// More registrations than [`MAX_REGISTRANTS`].
    TooMany(u16),
    /// The length does not match the registration count.
    Length {
        /// Length the header implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// A registration with key 0.
    ZeroKey,
    /// Two registrations for the same nexus.
    Duplicate(NexusId),
    /// The reservation's holder is not registered, or an All Registrants
    /// reservation has no registrant, or a holder is given where none may be.
    Holder,
    /// A snapshot part for another LUN or snapshot, or out of order.
    Sequence,
    /// The end came before every announced registration.
    Incomplete {
        /// Registrations announced.
        count: u16,
        /// Registrations received.
        got: u16,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::BufferTooSmall { need } => {
                write!(f, "PR snapshot needs a {need}-byte buffer")
            }
            SnapshotError::Truncated { have } => {
                write!(f, "PR snapshot truncated: {have} < {SNAP_HEADER} bytes")
            }
            SnapshotError::Version(v) => {
                write!(f, "PR snapshot version {v} != {SNAP_VERSION}")
            }
            SnapshotError::Reserved => write!(f, "PR snapshot has reserved bits set"),
            SnapshotError::Type(t) => write!(f, "PR snapshot has reservation type {t}"),
            SnapshotError::TooMany(n) => {
                write!(f, "PR snapshot has {n} > {MAX_REGISTRANTS} registrations")
            }
            SnapshotError::Length { expected, actual } => {
                write!(f, "PR snapshot length {actual} != {expected}")
            }
            SnapshotError::ZeroKey => write!(f, "PR snapshot has a zero key"),
            SnapshotError::Duplicate(n) => {
                write!(f, "PR snapshot registers nexus {n:#x} twice")
            }
            SnapshotError::Holder => write!(f, "PR snapshot reservation holder is invalid"),
            SnapshotError::Sequence => write!(f, "PR snapshot part out of sequence"),
            SnapshotError::Incomplete { count, got } => {
                write!(f, "PR snapshot ended after {got} of {count} registrations")
            }
        }
    }
}

/// Snapshot format version.
const SNAP_VERSION: u8 = 1;
/// Snapshot header length.
const SNAP_HEADER: usize = 20;
/// Snapshot bytes per registration.
const SNAP_ENTRY: usize = 18;

/// Little-endian field reader for snapshot decoding; every read is checked.
struct Le<'a> {
    b: &'a [u8],
    at: usize,
}

impl Le<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self
            .at
            .checked_add(N)
            .and_then(|end| self.b.get(self.at..end))
        {
            a.copy_from_slice(s);
        }
        self.at = self.at.saturating_add(N);
        a
    }
    fn u8(&mut self) -> u8 {
        let [v] = self.take::<1>();
        v
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Persistent reservation state of one LUN.
#[derive(Clone, Debug)]
pub(crate) struct PrState {
    generation: u32,
    count: usize,
    regs: [Registration; MAX_REGISTRANTS],
    res: Option<Reservation>,
}

/// Equal when generation, live registrations (in order) and reservation
/// are; unused slots are ignored.
impl PartialEq for PrState {
    fn eq(&self, other: &PrState) -> bool {
        self.generation == other.generation
            && self.registrations() == other.registrations()
            && self.res == other.res
    }
}

impl Eq for PrState {}

impl Default for PrState {
    fn default() -> Self {
        PrState::new()
    }
}

impl PrState {
    /// No registrations, no reservation, generation 0.
    pub(crate) const fn new() -> PrState {
        PrState {
            generation: 0,
            count: 0,
            regs: [Registration::EMPTY; MAX_REGISTRANTS],
            res: None,
        }
    }

    /// Forgets everything (generation back to 0).
    pub(crate) fn reset(&mut self) {
        self.generation = 0;
        self.count = 0;
        self.res = None;
    }

    /// PRgeneration.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// Registrations in registration order.
    pub(crate) fn registrations(&self) -> &[Registration] {
        self.regs.get(..self.count).unwrap_or(&[])
    }

    /// The reservation, if any.
    pub(crate) fn reservation(&self) -> Option<Reservation> {
        self.res
    }

    /// The reservation key of `nexus`, if registered.
    pub(crate) fn key_of(&self, nexus: NexusId) -> Option<u64> {
        self.registrations()
            .iter()
            .find(|r| r.nexus.id == nexus)
            .map(|r| r.key)
    }

    /// Whether `nexus` holds the reservation (for All Registrants types:
    /// whether it is registered while one exists).
    pub(crate) fn is_holder(&self, nexus: NexusId) -> bool {
        match self.res {
            None => false,
            Some(r) if r.ty.all_registrants() => self.key_of(nexus).is_some(),
            Some(r) => r.holder == nexus,
        }
    }

    /// Whether a command in `cdb` from `nexus` conflicts with the
    /// persistent reservation (SPC-4 §5.13.1): never without a reservation
    /// or for a holder; never for a registrant under a Registrants Only
    /// reservation; otherwise per [`access_class`] and the type. SPC-2
    /// RESERVE/RELEASE state is not tracked here.
    pub(crate) fn conflicts(&self, nexus: NexusId, cdb: &[u8]) -> bool {
        let Some(res) = self.res else {
            return false;
        };
        if self.is_holder(nexus) {
            return false;
        }
        if res.ty.registrants_only() && self.key_of(nexus).is_some() {
            return false;
        }
        match access_class(cdb) {
            PrAccess::Allowed => false,
            PrAccess::Read => res.ty.exclusive_access(),
            PrAccess::Write => true,
        }
    }

    fn find(&self, nexus: NexusId) -> Option<usize> {
        self.registrations()
            .iter()
            .position(|r| r.nexus.id == nexus)
    }

    /// Removes slot `idx`, keeping the order of the others.
    fn remove_at(&mut self, idx: usize) {
        if let Some(s) = self.regs.get_mut(idx..self.count) {
            if !s.is_empty() {
                s.rotate_left(1);
                self.count = self.count.saturating_sub(1);
            }
        }
    }

    /// Releases the reservation if its holder is gone (or, for All
    /// Registrants, if nobody is registered).
    fn fix_reservation(&mut self) {
        if let Some(r) = self.res {
            let gone = if r.ty.all_registrants() {
                self.count == 0
            } else {
                self.find(r.holder).is_none()
            };
            if gone {
                self.res = None;
            }
        }
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Sends `sense` as a unit attention to every registrant but `except`.
    fn ua_registrants(&self, except: NexusId, sense: Sense, sink: &mut dyn FnMut(PrEvent)) {
        for r in self.registrations() {
            if r.nexus.id != except {
                sink(PrEvent::UnitAttention {
                    nexus: r.nexus.id,
                    sense,
                });
            }
        }
    }

    /// Handles PERSISTENT RESERVE OUT from `nexus`: [`ProutRequest::parse`]
    /// then [`PrState::apply`].
    pub(crate) fn pr_out(
        &mut self,
        nexus: Nexus,
        cdb: &[u8],
        params: &[u8],
        sink: &mut dyn FnMut(PrEvent),
    ) -> Result<(), PrError> {
        let req = ProutRequest::parse(cdb, params)?;
        self.apply(nexus, &req, sink)
    }

    /// Executes a parsed PERSISTENT RESERVE OUT from `nexus`. On error the
    /// state is unchanged and no event is sent. On success `sink` receives
    /// the unit attentions and aborts to carry out.
    pub(crate) fn apply(
        &mut self,
        nexus: Nexus,
        req: &ProutRequest,
        sink: &mut dyn FnMut(PrEvent),
    ) -> Result<(), PrError> {
        let own = self.find(nexus.id);
        let own_key = own.and_then(|i| self.regs.get(i)).map(|r| r.key);
        match req.action {
            ProutAction::Register | ProutAction::RegisterAndIgnore => {
                let ignore = req.action == ProutAction::RegisterAndIgnore;
                self.register(nexus, own, own_key, ignore, req, sink)
            }
            _ => {
                // Every other action needs a registered nexus whose key
                // matches RESERVATION KEY.
                let Some(k) = own_key else {
                    return Err(PrError::Conflict);
                };
                if k != req.key {
                    return Err(PrError::Conflict);
                }
                let ty = match req.ty {
                    Some(t) => t,
                    // Only a hand-built request can lack the type.
                    None if req.action.uses_type() => {
                        return Err(PrError::Check(Sense::invalid_cdb_field(2, Some(3))))
                    }
                    None => PrType::WriteExclusive,
                };
                match req.action {
                    ProutAction::Reserve => self.reserve(nexus, ty),
                    ProutAction::Release => self.release(nexus, ty, sink),
                    ProutAction::Clear => {
                        self.clear(nexus, sink);
                        Ok(())
                    }
                    ProutAction::PreemptAndAbort => self.preempt(nexus, ty, req.sa_key, true, sink),
                    _ => self.preempt(nexus, ty, req.sa_key, false, sink),
                }
            }
        }
    }

    /// REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.13.7).
    fn register(
        &mut self,
        nexus: Nexus,
        own: Option<usize>,
        own_key: Option<u64>,
        ignore: bool,
        req: &ProutRequest,
        sink: &mut dyn FnMut(PrEvent),
    ) -> Result<(), PrError> {
        match (own, own_key) {
            (Some(idx), Some(k)) => {
                if !ignore && k != req.key {
                    return Err(PrError::Conflict);
                }
                if req.sa_key != 0 {
                    if let Some(r) = self.regs.get_mut(idx) {
                        r.key = req.sa_key;
                    }
                } else {
                    // Unregister. A Registrants Only holder leaving releases
                    // the reservation with RESERVATIONS RELEASED to the
                    // other registrants (SPC-4 §5.13.11.2.3).
                    let was_ro_holder = matches!(self.res,
                        Some(r) if r.ty.registrants_only() && r.holder == nexus.id);
                    self.remove_at(idx);
                    self.fix_reservation();
                    if was_ro_holder {
                        self.ua_registrants(nexus.id, Sense::RESERVATIONS_RELEASED, sink);
                    }
                }
            }
            _ => {
                if !ignore && req.key != 0 {
                    return Err(PrError::Conflict);
                }
                if req.sa_key == 0 {
                    // Nothing to register: GOOD, no change, generation kept.
                    return Ok(());
                }
                let slot = self
                    .regs
                    .get_mut(self.count)
                    .ok_or(PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))?;
                *slot = Registration {
                    nexus,
                    key: req.sa_key,
                };
                self.count = self.count.saturating_add(1);
            }
        }
        self.bump();
        Ok(())
    }

    /// RESERVE (SPC-4 §5.13.9).
    fn reserve(&mut self, nexus: Nexus, ty: PrType) -> Result<(), PrError> {
        match self.res {
            None => {
                self.res = Some(Reservation {
                    ty,
                    holder: if ty.all_registrants() { 0 } else { nexus.id },
                });
                Ok(())
            }
            Some(r) if r.ty == ty && self.is_holder(nexus.id) => Ok(()),
            Some(_) => Err(PrError::Conflict),
        }
    }

    /// RELEASE (SPC-4 §5.13.11.2.2).
    fn release(
        &mut self,
        nexus: Nexus,
        ty: PrType,
        sink: &mut dyn FnMut(PrEvent),
    ) -> Result<(), PrError> {
        let Some(r) = self.res else {
            return Ok(());
        };
        if !self.is_holder(nexus.id) {
            return Ok(());
        }
        if r.ty != ty {
            return Err(PrError::Check(Sense::INVALID_RELEASE_OF_PR));
        }
        self.res = None;
        if r.ty.registrants_only() || r.ty.all_registrants() {
            self.ua_registrants(nexus.id, Sense::RESERVATIONS_RELEASED, sink);
        }
        Ok(())
    }

    /// CLEAR (SPC-4 §5.13.11.2.6): RESERVATIONS PREEMPTED to every other
    /// registrant.
    fn clear(&mut self, nexus: Nexus, sink: &mut dyn FnMut(PrEvent)) {
        self.ua_registrants(nexus.id, Sense::RESERVATIONS_PREEMPTED, sink);
        self.count = 0;
        self.res = None;
        self.bump();
    }

    /// Removes the registrations whose key is `key` (all of them but
    /// `keep`'s when `key` is `None`), except `keep` when given; sends
    /// REGISTRATIONS PREEMPTED (and aborts) to the removed nexuses other
    /// than `issuer`. Returns how many were removed.
    fn remove_keys(
        &mut self,
        key: Option<u64>,
        keep: Option<NexusId>,
        issuer: NexusId,
        abort: bool,
        sink: &mut dyn FnMut(PrEvent),
    ) -> usize {
        let mut removed = 0usize;
        let mut i = 0usize;
        while let Some(r) = self.registrations().get(i).copied() {
            let key_hit = match key {
                None => true,
                Some(k) => r.key == k,
            };
            let hit = key_hit && Some(r.nexus.id) != keep;
            if hit {
                self.remove_at(i);
                removed = removed.saturating_add(1);
                if r.nexus.id != issuer {
                    sink(PrEvent::UnitAttention {
                        nexus: r.nexus.id,
                        sense: Sense::REGISTRATIONS_PREEMPTED,
                    });
                    if abort {
                        sink(PrEvent::Abort { nexus: r.nexus.id });
                    }
                }
            } else {
                i = i.saturating_add(1);
            }
        }
        removed
    }

    /// PREEMPT and PREEMPT AND ABORT (SPC-4 §5.13.11.2.4).
    ///
    /// * No reservation, or a reservation whose holder's key is not
    ///   `sa_key`, or an All Registrants reservation with `sa_key` ≠ 0:
    ///   remove every registration with key `sa_key` (the issuer's own too
    ///   if it matches); none matching is a RESERVATION CONFLICT. The
    ///   reservation stays.
    /// * `sa_key` 0 with no reservation or a reservation that is not All
    ///   Registrants: INVALID FIELD IN PARAMETER LIST (SERVICE ACTION
    ///   RESERVATION KEY).
    /// * All Registrants reservation and `sa_key` 0: remove every other
    ///   registration; the issuer reserves with the new type.
    /// * `sa_key` is the holder's key: remove the registrations with that
    ///   key except the issuer's, the issuer becomes holder with the new
    ///   type; if the type changed, RESERVATIONS RELEASED to the remaining
    ///   registrants but the issuer.
    ///
    /// Removed registrants but the issuer get REGISTRATIONS PREEMPTED and,
    /// for PREEMPT AND ABORT, an abort of their tasks. The generation is
    /// bumped on success.
    fn preempt(
        &mut self,
        nexus: Nexus,
        ty: PrType,
        sa_key: u64,
        abort: bool,
        sink: &mut dyn FnMut(PrEvent),
    ) -> Result<(), PrError> {
        let res = self.res;
        let holder_key = res.and_then(|r| {
            if r.ty.all_registrants() {
                None
            } else {
                self.key_of(r.holder)
            }
        });
        let all_reg = res.is_some_and(|r| r.ty.all_registrants());
        let new_res = Reservation {
            ty,
            holder: if ty.all_registrants() { 0 } else { nexus.id },
        };
        if sa_key == 0 {
            if !all_reg {
                return Err(PrError::Check(Sense::invalid_param_field(8, None)));
            }
            self.remove_keys(None, Some(nexus.id), nexus.id, abort, sink);
            self.res = Some(new_res);
        } else if holder_key == Some(sa_key) {
            let old = res.map(|r| r.ty);
            self.remove_keys(Some(sa_key), Some(nexus.id), nexus.id, abort, sink);
            self.res = Some(new_res);
            if old != Some(ty) {
                self.ua_registrants(nexus.id, Sense::RESERVATIONS_RELEASED, sink);
            }
        } else {
            if !self.registrations().iter().any(|r| r.key == sa_key) {
                return Err(PrError::Conflict);
            }
            self.remove_keys(Some(sa_key), None, nexus.id, abort, sink);
            self.fix_reservation();
        }
        self.bump();
        Ok(())
    }

    /// Handles PERSISTENT RESERVE IN into `buf`, clipped to the allocation
    /// length (bytes 7..8). `transport_id` writes the TransportID of a
    /// registered nexus into its buffer and returns its untruncated length
    /// (READ FULL STATUS only; see [`iscsi_transport_id`] and
    /// [`sas_transport_id`]). A CDB shorter than 10 bytes or an unknown
    /// service action is INVALID FIELD IN CDB.
    pub(crate) fn pr_in(
        &self,
        cdb: &[u8],
        transport_id: &dyn Fn(NexusId, &mut [u8]) -> usize,
        buf: &mut [u8],
    ) -> Result<DataIn, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_cdb_field(0, None));
        }
        let alloc = usize::from(be16(cdb, 7).unwrap_or(0));
        let buf_len = buf.len();
        let out = buf.get_mut(..alloc.min(buf_len)).unwrap_or(&mut []);
        let full = match op::service_action(cdb) {
            0x00 => self.read_keys(out),
            0x01 => self.read_reservation(out),
            0x02 => report_capabilities(out),
            0x03 => self.read_full_status(transport_id, out),
            _ => return Err(Sense::invalid_cdb_field(1, Some(4))),
        };
        Ok(DataIn::new(full, alloc, buf_len))
    }

    /// PR IN READ KEYS parameter data; returns the untruncated length.
    pub(crate) fn read_keys(&self, buf: &mut [u8]) -> usize {
        let mut o = Out::new(buf);
        o.be32(self.generation);
        // At most 128 * 8 bytes.
        o.be32(sat32(self.count.saturating_mul(8)));
        for r in self.registrations() {
            o.be64(r.key);
        }
        o.len()
    }

    /// PR IN READ RESERVATION parameter data; the key of an All Registrants
    /// reservation is reported as 0 (SPC-4 §6.15.3).
    pub(crate) fn read_reservation(&self, buf: &mut [u8]) -> usize {
        let mut o = Out::new(buf);
        o.be32(self.generation);
        match self.res {
            None => o.be32(0),
            Some(r) => {
                o.be32(16);
                let key = if r.ty.all_registrants() {
                    0
                } else {
                    self.key_of(r.holder).unwrap_or(0)
                };
                o.be64(key);
                o.be32(0); // obsolete
                o.u8(0);
                o.u8(r.ty.code()); // scope 0h: LU
                o.be16(0); // obsolete
            }
        }
        o.len()
    }

    /// PR IN READ FULL STATUS parameter data: one descriptor per
    /// registration with R_HOLDER, scope/type for holders, the relative
    /// target port and the TransportID (clipped to [`MAX_TRANSPORT_ID`]).
    pub(crate) fn read_full_status(
        &self,
        transport_id: &dyn Fn(NexusId, &mut [u8]) -> usize,
        buf: &mut [u8],
    ) -> usize {
        let mut o = Out::new(buf);
        o.be32(self.generation);
        o.be32(0); // additional length, set below
        for r in self.registrations() {
            let holder = self.is_holder(r.nexus.id);
            let mut tid = [0u8; MAX_TRANSPORT_ID];
            let tid_len = transport_id(r.nexus.id, &mut tid).min(MAX_TRANSPORT_ID);
            o.be64(r.key);
            o.be32(0);
            o.u8(u8::from(holder)); // ALL_TG_PT 0, R_HOLDER
            o.u8(match self.res {
                Some(res) if holder => res.ty.code(),
                _ => 0,
            });
            o.be32(0);
            o.be16(r.nexus.rel_port);
            o.be32(sat32(tid_len));
            o.bytes(tid.get(..tid_len).unwrap_or(&[]));
        }
        let n = o.len();
        o.set_be32(4, sat32(n.saturating_sub(8)));
        n
    }

    /// Length of [`PrState::encode`]'s output.
    pub(crate) fn encoded_len(&self) -> usize {
        // count <= 128, so this is at most 20 + 128 * 18.
        SNAP_HEADER.saturating_add(self.count.saturating_mul(SNAP_ENTRY))
    }

    /// Serializes the whole state (little endian) for the peer:
    ///
    /// | offset | size | field |
    /// |---|---|---|
    /// | 0 | 1 | version (1) |
    /// | 1 | 1 | flags: bit 0 = reservation present |
    /// | 2 | 1 | reservation type (0 when none) |
    /// | 3 | 1 | reserved (0) |
    /// | 4 | 4 | PR generation |
    /// | 8 | 8 | holder nexus id (0 when none or All Registrants) |
    /// | 16 | 2 | registration count n (≤ 128) |
    /// | 18 | 2 | reserved (0) |
    /// | 20 | 18·n | per registration: nexus id (8), relative port (2), key (8) |
    ///
    /// Writes nothing and fails if `buf` is shorter than
    /// [`PrState::encoded_len`]; returns the length written.
    pub(crate) fn encode(&self, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        let need = self.encoded_len();
        let Some(dst) = buf.get_mut(..need) else {
            return Err(SnapshotError::BufferTooSmall { need });
        };
        let mut at = 0usize;
        let mut put = |bytes: &[u8]| {
            for b in bytes {
                if let Some(d) = dst.get_mut(at) {
                    *d = *b;
                }
                at = at.saturating_add(1);
            }
        };
        put(&[
            SNAP_VERSION,
            u8::from(self.res.is_some()),
            self.res.map_or(0, |r| r.ty.code()),
            0,
        ]);
        put(&self.generation.to_le_bytes());
        put(&self.res.map_or(0, |r| r.holder).to_le_bytes());
        // count <= 128.
        put(&u16::try_from(self.count).unwrap_or(u16::MAX).to_le_bytes());
        put(&[0, 0]);
        for r in self.registrations() {
            put(&r.nexus.id.to_le_bytes());
            put(&r.nexus.rel_port.to_le_bytes());
            put(&r.key.to_le_bytes());
        }
        Ok(need)
    }

    /// Replaces this state with a snapshot from [`PrState::encode`]. The
    /// whole input is checked first (version, reserved fields, type, count,
    /// exact length, non-zero keys, unique nexuses, a registered holder);
    /// on error the state is unchanged.
    pub(crate) fn decode_into(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if bytes.len() < SNAP_HEADER {
            return Err(SnapshotError::Truncated { have: bytes.len() });
        }
        let mut rd = Le { b: bytes, at: 0 };
        let version = rd.u8();
        let flags = rd.u8();
        let ty_code = rd.u8();
        let rsvd1 = rd.u8();
        let generation = rd.u32();
        let holder = rd.u64();
        let count = rd.u16();
        let rsvd2 = rd.u16();
        if version != SNAP_VERSION {
            return Err(SnapshotError::Version(version));
        }
        if flags & !1 != 0 || rsvd1 != 0 || rsvd2 != 0 {
            return Err(SnapshotError::Reserved);
        }
        let ty = if flags & 1 != 0 {
            Some(PrType::from_u8(ty_code).ok_or(SnapshotError::Type(ty_code))?)
        } else if ty_code != 0 {
            return Err(SnapshotError::Type(ty_code));
        } else {
            None
        };
        let n = usize::from(count);
        if n > MAX_REGISTRANTS {
            return Err(SnapshotError::TooMany(count));
        }
        // n <= 128: no overflow.
        let expected = SNAP_HEADER.saturating_add(n.saturating_mul(SNAP_ENTRY));
        if bytes.len() != expected {
            return Err(SnapshotError::Length {
                expected,
                actual: bytes.len(),
            });
        }
        // First pass: check every entry without touching `self`.
        let mut holder_found = false;
        for i in 0..n {
            let id = rd.u64();
            let _rel_port = rd.u16();
            let key = rd.u64();
            if key == 0 {
                return Err(SnapshotError::ZeroKey);
            }
            // i < n <= 128: quadratic but bounded.
            if bytes_has_id(bytes, i, id) {
                return Err(SnapshotError::Duplicate(id));
            }
            holder_found |= id == holder;
        }
        let res = match ty {
            None if holder != 0 => return Err(SnapshotError::Holder),
            None => None,
            Some(t) if t.all_registrants() => {
                if holder != 0 || n == 0 {
                    return Err(SnapshotError::Holder);
                }
                Some(Reservation { ty: t, holder: 0 })
            }
            Some(t) => {
                if !holder_found {
                    return Err(SnapshotError::Holder);
                }
                Some(Reservation { ty: t, holder })
            }
        };
        // Second pass: install.
        let mut rd = Le {
            b: bytes,
            at: SNAP_HEADER,
        };
        for slot in self.regs.iter_mut().take(n) {
            let id = rd.u64();
            let rel_port = rd.u16();
            let key = rd.u64();
            *slot = Registration {
                nexus: Nexus { id, rel_port },
                key,
            };
        }
        self.generation = generation;
        self.count = n;
        self.res = res;
        Ok(())
    }
}

/// Largest [`PrState::encode`] output.
pub(crate) const SNAP_MAX: usize = SNAP_HEADER + MAX_REGISTRANTS * SNAP_ENTRY;

/// Collects a snapshot that arrives in parts (the interlink's PrBegin,
/// PrReg..., PrEnd) with the peer's nexuses already mapped to local ids,
/// then installs it with every check of [`PrState::decode_into`].
pub(crate) struct SnapshotBuilder {
    lun_id: u32,
    snapshot: u32,
    count: u16,
    next: u16,
    holder_index: Option<u16>,
    buf: [u8; SNAP_MAX],
}

impl SnapshotBuilder {
    /// Starts snapshot `snapshot` of LUN `lun_id`: `count` registrations
    /// follow, the reservation (type code, 0 for none) is held by the
    /// registration at `holder_index` (none for All Registrants).
    pub(crate) fn begin(
        lun_id: u32,
        snapshot: u32,
        generation: u32,
        count: u16,
        res_type: u8,
        holder_index: Option<u16>,
    ) -> Result<SnapshotBuilder, SnapshotError> {
        let mut b = SnapshotBuilder::EMPTY;
        b.restart(lun_id, snapshot, generation, count, res_type, holder_index)?;
        Ok(b)
    }

    /// A builder to [`SnapshotBuilder::restart`] (it holds a snapshot's
    /// bytes: keep it in one place, not on a small stack).
    pub(crate) const EMPTY: SnapshotBuilder =
        SnapshotBuilder { lun_id: 0, snapshot: 0, count: 0, next: 0, holder_index: None, buf: [0; SNAP_MAX] };

    /// [`SnapshotBuilder::begin`] in place: what was being built is
    /// dropped. On error the builder is left empty (nothing to add to).
    pub(crate) fn restart(
        &mut self,
        lun_id: u32,
        snapshot: u32,
        generation: u32,
        count: u16,
        res_type: u8,
        holder_index: Option<u16>,
    ) -> Result<(), SnapshotError> {
        self.count = 0;
        self.next = 0;
        if usize::from(count) > MAX_REGISTRANTS {
            return Err(SnapshotError::TooMany(count));
        }
        if holder_index.is_some_and(|h| h >= count) {
            return Err(SnapshotError::Holder);
        }
        self.lun_id = lun_id;
        self.snapshot = snapshot;
        self.count = count;
        self.holder_index = holder_index;
        self.buf.fill(0);
        let head = [SNAP_VERSION, u8::from(res_type != 0), res_type, 0];
        self.put(0, &head);
        self.put(4, &generation.to_le_bytes());
        // 8..16: holder id, filled when its registration arrives.
        self.put(16, &count.to_le_bytes());
        Ok(())
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = at.checked_add(bytes.len()).and_then(|end| self.buf.get_mut(at..end)) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Adds registration `index` (they come in order from 0): `nexus` is
    /// the local handle of the peer's I_T nexus.
    pub(crate) fn add(
        &mut self,
        lun_id: u32,
        snapshot: u32,
        index: u16,
        nexus: Nexus,
        key: u64,
    ) -> Result<(), SnapshotError> {
        if lun_id != self.lun_id || snapshot != self.snapshot || index != self.next || index >= self.count {
            return Err(SnapshotError::Sequence);
        }
        if key == 0 {
            return Err(SnapshotError::ZeroKey);
        }
        // index < count <= 128.
        let at = SNAP_HEADER + usize::from(index) * SNAP_ENTRY;
        self.put(at, &nexus.id.to_le_bytes());
        self.put(at + 8, &nexus.rel_port.to_le_bytes());
        self.put(at + 10, &key.to_le_bytes());
        if self.holder_index == Some(index) {
            self.put(8, &nexus.id.to_le_bytes());
        }
        self.next = index.saturating_add(1);
        Ok(())
    }

    /// Ends the snapshot: on success `state` is replaced by it; on error
    /// `state` is unchanged.
    pub(crate) fn finish(&self, lun_id: u32, snapshot: u32, state: &mut PrState) -> Result<(), SnapshotError> {
        if lun_id != self.lun_id || snapshot != self.snapshot {
            return Err(SnapshotError::Sequence);
        }
        if self.next != self.count {
            return Err(SnapshotError::Incomplete { count: self.count, got: self.next });
        }
        let len = SNAP_HEADER + usize::from(self.count) * SNAP_ENTRY;
        state.decode_into(self.buf.get(..len).unwrap_or(&[]))
    }

    /// The LUN this snapshot is for.
    pub(crate) fn lun_id(&self) -> u32 {
        self.lun_id
    }
}

/// Whether one of the first `before` snapshot entries in `bytes` has nexus
/// id `id`.
fn bytes_has_id(bytes: &[u8], before: usize, id: NexusId) -> bool {
    (0..before).any(|j| {
        let at = SNAP_HEADER.saturating_add(j.saturating_mul(SNAP_ENTRY));
        let mut rd = Le { b: bytes, at };
        rd.u64() == id
    })
}

/// PR IN REPORT CAPABILITIES parameter data (8 bytes): CRH = 1, no
/// SIP_C / ATP_C / PTPL_C, TMV = 1 with ALLOW COMMANDS 001b, and all six
/// types supported.
pub(crate) fn report_capabilities(buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    o.be16(8);
    o.u8(0x10); // CRH
    o.u8(0x80 | 0x10); // TMV, ALLOW COMMANDS 001b
    o.u8(0xEA); // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
    o.u8(0x01); // EX_AC_AR
    o.be16(0);
    o.len()
}

/// Builds an iSCSI TransportID (SPC-4 §7.6.4.6): format 01b (initiator
/// port, `"<name>,i,0x<isid>"`) when `isid` is given, else format 00b
/// (device name). NUL terminated and padded to a multiple of 4, at least
/// 20 bytes of name; the name is cut so the whole fits
/// [`MAX_TRANSPORT_ID`]. Returns the untruncated length.
pub(crate) fn iscsi_transport_id(name: &[u8], isid: Option<&[u8]>, buf: &mut [u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let isid = isid.map(|s| s.get(..s.len().min(6)).unwrap_or(&[]));
    // ",i,0x" + 12 hex digits + NUL.
    let suffix = if isid.is_some() { 18usize } else { 1 };
    let room = MAX_TRANSPORT_ID.saturating_sub(4).saturating_sub(suffix);
    let name = name.get(..name.len().min(room)).unwrap_or(&[]);
    let body = name.len().saturating_add(suffix);
    let padded = body.saturating_add(3) & !3;
    let padded = padded.max(20);
    let mut o = Out::new(buf);
    o.u8(if isid.is_some() { 0x45 } else { 0x05 });
    o.u8(0);
    o.be16(u16::try_from(padded).unwrap_or(u16::MAX));
    o.bytes(name);
    if let Some(isid) = isid {
        o.bytes(b",i,0x");
        for i in 0..6 {
            let b = isid.get(i).copied().unwrap_or(0);
            o.u8(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            o.u8(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'));
        }
    }
    o.zeros(padded.saturating_sub(body).saturating_add(1));
    o.len()
}

/// Builds a SAS TransportID (24 bytes, SPC-4 §7.6.4.7); tcm_loop reports
/// SAS. Returns the untruncated length.
pub(crate) fn sas_transport_id(sas_address: u64, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    o.u8(0x06);
    o.zeros(3);
    o.be64(sas_address);
    o.zeros(12);
    o.len()
}

/// Builds a Fibre Channel TransportID (24 bytes, SPC-4 §7.6.4.2). Returns
/// the untruncated length.
pub(crate) fn fc_transport_id(port_name: u64, buf: &mut [u8]) -> usize {
    let mut o = Out::new(buf);
    o.u8(0x00);
    o.zeros(7);
    o.be64(port_name);
    o.zeros(8);
    o.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const A: Nexus = Nexus {
        id: 0xA,
        rel_port: 1,
    };
    const B: Nexus = Nexus {
        id: 0xB,
        rel_port: 2,
    };
    const C: Nexus = Nexus {
        id: 0xC,
        rel_port: 129,
    };
    const D: Nexus = Nexus {
        id: 0xD,
        rel_port: 130,
    };

    const REGISTER: u8 = 0;
    const RESERVE: u8 = 1;
    const RELEASE: u8 = 2;
    const CLEAR: u8 = 3;
    const PREEMPT: u8 = 4;
    const PREEMPT_ABORT: u8 = 5;
    const RIEK: u8 = 6;

    fn cdb(sa: u8, ty: u8) -> [u8; 10] {
        [0x5F, sa, ty, 0, 0, 0, 0, 0, 24, 0]
    }

    fn params(key: u64, sa_key: u64, flags: u8) -> [u8; 24] {
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        p[20] = flags;
        p
    }

    fn out(
        st: &mut PrState,
        n: Nexus,
        sa: u8,
        ty: u8,
        key: u64,
        sa_key: u64,
    ) -> (Result<(), PrError>, Vec<PrEvent>) {
        let mut ev = Vec::new();
        let before = st.clone();
        let r = st.pr_out(n, &cdb(sa, ty), &params(key, sa_key, 0), &mut |e| {
            ev.push(e)
        });
        if r.is_err() {
            assert_eq!(*st, before, "failed PR OUT changed the state");
            assert!(ev.is_empty());
        }
        check_invariants(st);
        (r, ev)
    }

    fn ok(st: &mut PrState, n: Nexus, sa: u8, ty: u8, key: u64, sa_key: u64) -> Vec<PrEvent> {
        let (r, ev) = out(st, n, sa, ty, key, sa_key);
        assert_eq!(r, Ok(()), "sa {sa} ty {ty} from {n:?}");
        ev
    }

    fn check_invariants(st: &PrState) {
        let regs = st.registrations();
        assert!(regs.len() <= MAX_REGISTRANTS);
        for (i, r) in regs.iter().enumerate() {
            assert_ne!(r.key, 0);
            assert!(regs[..i].iter().all(|o| o.nexus.id != r.nexus.id));
        }
        match st.reservation() {
            None => {}
            Some(r) if r.ty.all_registrants() => {
                assert_eq!(r.holder, 0);
                assert!(!regs.is_empty());
            }
            Some(r) => assert!(st.key_of(r.holder).is_some()),
        }
        let mut b = [0u8; 4096];
        let n = st.encode(&mut b).unwrap();
        let mut back = PrState::new();
        back.decode_into(&b[..n]).unwrap();
        assert_eq!(&back, st);
    }

    fn ua(nexus: Nexus, sense: Sense) -> PrEvent {
        PrEvent::UnitAttention {
            nexus: nexus.id,
            sense,
        }
    }

    /// A, B, C registered with keys 0xA0, 0xB0, 0xC0.
    fn three() -> PrState {
        let mut st = PrState::new();
        ok(&mut st, A, REGISTER, 0, 0, 0xA0);
        ok(&mut st, B, REGISTER, 0, 0, 0xB0);
        ok(&mut st, C, RIEK, 0, 0, 0xC0);
        st
    }

    #[test]
    fn parse_checks() {
        let p = params(1, 2, 0);
        assert_eq!(
            ProutRequest::parse(&cdb(RESERVE, 3)[..9], &p),
            Err(Sense::invalid_cdb_field(0, None))
        );
        for sa in [7u8, 8, 0x1F] {
            assert_eq!(
                ProutRequest::parse(&cdb(sa, 1), &p),
                Err(Sense::invalid_cdb_field(1, Some(4)))
            );
        }
        for sa in [RESERVE, RELEASE, PREEMPT, PREEMPT_ABORT] {
            assert_eq!(
                ProutRequest::parse(&cdb(sa, 0x11), &p),
                Err(Sense::invalid_cdb_field(2, Some(7)))
            );
            for ty in [0u8, 2, 4, 9, 0xF] {
                assert_eq!(
                    ProutRequest::parse(&cdb(sa, ty), &p),
                    Err(Sense::invalid_cdb_field(2, Some(3)))
                );
            }
        }
        // Scope and type are ignored where unused.
        for sa in [REGISTER, CLEAR, RIEK] {
            let r = ProutRequest::parse(&cdb(sa, 0xFF), &p).unwrap();
            assert_eq!(r.ty, None);
            assert_eq!((r.key, r.sa_key), (1, 2));
        }
        let r = ProutRequest::parse(&cdb(PREEMPT_ABORT, 8), &p).unwrap();
        assert_eq!(r.action, ProutAction::PreemptAndAbort);
        assert_eq!(r.ty, Some(PrType::ExclusiveAccessAllRegistrants));
        assert_eq!(
            ProutRequest::parse(&cdb(REGISTER, 0), &p[..23]),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        let mut c = cdb(REGISTER, 0);
        c[8] = 23;
        assert_eq!(
            ProutRequest::parse(&c, &p),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        c[8] = 0;
        assert_eq!(
            ProutRequest::parse(&c, &p),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        let mut long = [0u8; 28];
        long[..24].copy_from_slice(&p);
        c[8] = 28;
        assert_eq!(
            ProutRequest::parse(&c, &long),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        for sa in [REGISTER, RIEK, RESERVE, CLEAR] {
            assert_eq!(
                ProutRequest::parse(&cdb(sa, 1), &params(1, 2, 0x08)),
                Err(Sense::invalid_param_field(20, Some(3)))
            );
        }
        for sa in [REGISTER, RIEK] {
            assert_eq!(
                ProutRequest::parse(&cdb(sa, 0), &params(1, 2, 0x04)),
                Err(Sense::invalid_param_field(20, Some(2)))
            );
            assert_eq!(
                ProutRequest::parse(&cdb(sa, 0), &params(1, 2, 0x01)),
                Err(Sense::invalid_param_field(20, Some(0)))
            );
        }
        // ALL_TG_PT and APTPL are ignored by the other actions.
        assert!(ProutRequest::parse(&cdb(RESERVE, 1), &params(1, 2, 0x05)).is_ok());
        assert!(ProutRequest::parse(&cdb(CLEAR, 1), &params(1, 2, 0x05)).is_ok());
    }

    #[test]
    fn register_and_unregister() {
        let mut st = PrState::new();
        // Unregistered with a non-zero key: conflict.
        assert_eq!(
            out(&mut st, A, REGISTER, 0, 5, 0xA0).0,
            Err(PrError::Conflict)
        );
        // Unregistered registering nothing: GOOD, no change.
        assert!(ok(&mut st, A, REGISTER, 0, 0, 0).is_empty());
        assert_eq!(st.generation(), 0);
        ok(&mut st, A, REGISTER, 0, 0, 0xA0);
        assert_eq!(st.generation(), 1);
        assert_eq!(st.key_of(A.id), Some(0xA0));
        // Registered with the wrong key: conflict.
        assert_eq!(
            out(&mut st, A, REGISTER, 0, 0xA1, 0xA2).0,
            Err(PrError::Conflict)
        );
        assert_eq!(
            out(&mut st, A, REGISTER, 0, 0, 0xA2).0,
            Err(PrError::Conflict)
        );
        // Key change.
        ok(&mut st, A, REGISTER, 0, 0xA0, 0xA1);
        assert_eq!(st.key_of(A.id), Some(0xA1));
        assert_eq!(st.generation(), 2);
        // REGISTER AND IGNORE ignores RESERVATION KEY.
        ok(&mut st, A, RIEK, 0, 0xDEAD, 0xA2);
        assert_eq!(st.key_of(A.id), Some(0xA2));
        ok(&mut st, B, RIEK, 0, 0xDEAD, 0xB0);
        assert_eq!(st.registrations().len(), 2);
        // Two nexuses may share a key.
        ok(&mut st, C, REGISTER, 0, 0, 0xB0);
        // Unregister keeps the order of the others.
        ok(&mut st, A, REGISTER, 0, 0xA2, 0);
        let ids: Vec<_> = st.registrations().iter().map(|r| r.nexus.id).collect();
        assert_eq!(ids, [B.id, C.id]);
        ok(&mut st, B, RIEK, 0, 0, 0);
        assert_eq!(st.key_of(B.id), None);
        assert_eq!(st.generation(), 7);
        assert_eq!(st.registrations()[0].nexus, C);
    }

    #[test]
    fn registration_table_full() {
        let mut st = PrState::new();
        for i in 0..MAX_REGISTRANTS as u64 {
            let n = Nexus {
                id: 100 + i,
                rel_port: 1,
            };
            ok(&mut st, n, REGISTER, 0, 0, 1 + i);
        }
        let extra = Nexus { id: 1, rel_port: 1 };
        assert_eq!(
            out(&mut st, extra, REGISTER, 0, 0, 7).0,
            Err(PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))
        );
        assert_eq!(
            out(&mut st, extra, RIEK, 0, 0, 7).0,
            Err(PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))
        );
        // A registered nexus can still change its key.
        ok(
            &mut st,
            Nexus {
                id: 100,
                rel_port: 1,
            },
            REGISTER,
            0,
            1,
            9,
        );
    }

    #[test]
    fn reserve_every_type() {
        for t in PrType::ALL {
            let ty = t.code();
            let mut st = three();
            let g = st.generation();
            // Unregistered, or with the wrong key: conflict.
            assert_eq!(out(&mut st, D, RESERVE, ty, 0, 0).0, Err(PrError::Conflict));
            assert_eq!(
                out(&mut st, A, RESERVE, ty, 0xB0, 0).0,
                Err(PrError::Conflict)
            );
            assert!(ok(&mut st, A, RESERVE, ty, 0xA0, 0).is_empty());
            assert_eq!(st.generation(), g, "RESERVE keeps the generation");
            let r = st.reservation().unwrap();
            assert_eq!(r.ty, t);
            assert_eq!(r.holder, if t.all_registrants() { 0 } else { A.id });
            // Same type again by the holder: GOOD.
            ok(&mut st, A, RESERVE, ty, 0xA0, 0);
            // Other type by the holder: conflict.
            let other = if ty == 1 { 3 } else { 1 };
            assert_eq!(
                out(&mut st, A, RESERVE, other, 0xA0, 0).0,
                Err(PrError::Conflict)
            );
            // Another registrant: conflict, unless All Registrants.
            let r = out(&mut st, B, RESERVE, ty, 0xB0, 0).0;
            if t.all_registrants() {
                assert_eq!(r, Ok(()));
                assert!(st.is_holder(B.id));
            } else {
                assert_eq!(r, Err(PrError::Conflict));
                assert!(!st.is_holder(B.id));
            }
            assert!(st.is_holder(A.id));
            assert!(!st.is_holder(D.id));
        }
    }

    #[test]
    fn release_every_type() {
        for t in PrType::ALL {
            let ty = t.code();
            let mut st = three();
            // No reservation: GOOD.
            assert!(ok(&mut st, A, RELEASE, ty, 0xA0, 0).is_empty());
            ok(&mut st, A, RESERVE, ty, 0xA0, 0);
            assert_eq!(out(&mut st, D, RELEASE, ty, 0, 0).0, Err(PrError::Conflict));
            assert_eq!(
                out(&mut st, A, RELEASE, ty, 0xA1, 0).0,
                Err(PrError::Conflict)
            );
            if !t.all_registrants() {
                // Not the holder: GOOD, nothing happens.
                assert!(ok(&mut st, B, RELEASE, ty, 0xB0, 0).is_empty());
                assert!(st.reservation().is_some());
            }
            let wrong = if ty == 1 { 3 } else { 1 };
            assert_eq!(
                out(&mut st, A, RELEASE, wrong, 0xA0, 0).0,
                Err(PrError::Check(Sense::INVALID_RELEASE_OF_PR))
            );
            let g = st.generation();
            let ev = ok(&mut st, A, RELEASE, ty, 0xA0, 0);
            assert_eq!(st.reservation(), None);
            assert_eq!(st.generation(), g);
            if t.registrants_only() || t.all_registrants() {
                assert_eq!(
                    ev,
                    [
                        ua(B, Sense::RESERVATIONS_RELEASED),
                        ua(C, Sense::RESERVATIONS_RELEASED)
                    ]
                );
            } else {
                assert!(ev.is_empty());
            }
            assert_eq!(st.registrations().len(), 3);
        }
    }

    #[test]
    fn unregistering_the_holder() {
        for t in PrType::ALL {
            let mut st = three();
            ok(&mut st, B, RESERVE, t.code(), 0xB0, 0);
            let ev = ok(&mut st, B, REGISTER, 0, 0xB0, 0);
            if t.all_registrants() {
                // Others are still registered: the reservation stays.
                assert!(ev.is_empty());
                assert_eq!(st.reservation().map(|r| r.ty), Some(t));
                ok(&mut st, A, REGISTER, 0, 0xA0, 0);
                ok(&mut st, C, REGISTER, 0, 0xC0, 0);
                assert_eq!(st.reservation(), None);
            } else if t.registrants_only() {
                assert_eq!(st.reservation(), None);
                assert_eq!(
                    ev,
                    [
                        ua(A, Sense::RESERVATIONS_RELEASED),
                        ua(C, Sense::RESERVATIONS_RELEASED)
                    ]
                );
            } else {
                assert_eq!(st.reservation(), None);
                assert!(ev.is_empty());
            }
        }
        // Unregistering a non-holder leaves the reservation.
        let mut st = three();
        ok(&mut st, A, RESERVE, 1, 0xA0, 0);
        ok(&mut st, C, REGISTER, 0, 0xC0, 0);
        assert_eq!(st.reservation().unwrap().holder, A.id);
    }

    #[test]
    fn clear() {
        let mut st = three();
        ok(&mut st, A, RESERVE, 3, 0xA0, 0);
        assert_eq!(out(&mut st, D, CLEAR, 0, 0, 0).0, Err(PrError::Conflict));
        assert_eq!(out(&mut st, B, CLEAR, 0, 0xA0, 0).0, Err(PrError::Conflict));
        let g = st.generation();
        let ev = ok(&mut st, B, CLEAR, 0, 0xB0, 0);
        assert_eq!(
            ev,
            [
                ua(A, Sense::RESERVATIONS_PREEMPTED),
                ua(C, Sense::RESERVATIONS_PREEMPTED)
            ]
        );
        assert!(st.registrations().is_empty());
        assert_eq!(st.reservation(), None);
        assert_eq!(st.generation(), g + 1);
    }

    #[test]
    fn preempt_without_reservation() {
        let mut st = three();
        ok(&mut st, D, REGISTER, 0, 0, 0xB0); // D shares B's key
        assert_eq!(
            out(&mut st, A, PREEMPT, 1, 0xA0, 0x99).0,
            Err(PrError::Conflict)
        );
        assert_eq!(
            out(&mut st, A, PREEMPT, 1, 0xA0, 0).0,
            Err(PrError::Check(Sense::invalid_param_field(8, None)))
        );
        assert_eq!(
            out(&mut st, A, PREEMPT, 1, 0xA1, 0xB0).0,
            Err(PrError::Conflict)
        );
        assert_eq!(
            out(
                &mut st,
                Nexus {
                    id: 0xE,
                    rel_port: 1
                },
                PREEMPT,
                1,
                0,
                0xB0
            )
            .0,
            Err(PrError::Conflict)
        );
        let g = st.generation();
        let ev = ok(&mut st, A, PREEMPT, 1, 0xA0, 0xB0);
        assert_eq!(
            ev,
            [
                ua(B, Sense::REGISTRATIONS_PREEMPTED),
                ua(D, Sense::REGISTRATIONS_PREEMPTED)
            ]
        );
        assert_eq!(st.reservation(), None, "no reservation is created");
        assert_eq!(st.generation(), g + 1);
        let ids: Vec<_> = st.registrations().iter().map(|r| r.nexus.id).collect();
        assert_eq!(ids, [A.id, C.id]);
        // Preempting one's own key removes oneself, without a UA.
        let ev = ok(&mut st, A, PREEMPT, 1, 0xA0, 0xA0);
        assert!(ev.is_empty());
        assert_eq!(st.key_of(A.id), None);
    }

    #[test]
    fn preempt_the_holder() {
        for t in PrType::ALL.into_iter().filter(|t| !t.all_registrants()) {
            for new in PrType::ALL {
                let mut st = three();
                ok(&mut st, D, REGISTER, 0, 0, 0xA0); // D shares A's key
                ok(&mut st, A, RESERVE, t.code(), 0xA0, 0);
                let g = st.generation();
                let ev = ok(&mut st, B, PREEMPT, new.code(), 0xB0, 0xA0);
                let mut want = std::vec![
                    ua(A, Sense::REGISTRATIONS_PREEMPTED),
                    ua(D, Sense::REGISTRATIONS_PREEMPTED),
                ];
                if new != t {
                    want.push(ua(C, Sense::RESERVATIONS_RELEASED));
                }
                assert_eq!(ev, want, "{t:?} -> {new:?}");
                let r = st.reservation().unwrap();
                assert_eq!(r.ty, new);
                assert!(st.is_holder(B.id));
                assert_eq!(st.generation(), g + 1);
                assert_eq!(st.registrations().len(), 2);
            }
        }
    }

    #[test]
    fn holder_preempts_itself_to_change_type() {
        let mut st = three();
        ok(&mut st, D, REGISTER, 0, 0, 0xA0);
        ok(&mut st, A, RESERVE, 1, 0xA0, 0);
        let ev = ok(&mut st, A, PREEMPT, 3, 0xA0, 0xA0);
        assert_eq!(
            ev,
            [
                ua(D, Sense::REGISTRATIONS_PREEMPTED),
                ua(B, Sense::RESERVATIONS_RELEASED),
                ua(C, Sense::RESERVATIONS_RELEASED)
            ]
        );
        assert_eq!(
            st.reservation(),
            Some(Reservation {
                ty: PrType::ExclusiveAccess,
                holder: A.id
            })
        );
    }

    #[test]
    fn preempt_a_non_holder() {
        let mut st = three();
        ok(&mut st, A, RESERVE, 5, 0xA0, 0);
        let ev = ok(&mut st, B, PREEMPT, 1, 0xB0, 0xC0);
        assert_eq!(ev, [ua(C, Sense::REGISTRATIONS_PREEMPTED)]);
        assert_eq!(
            st.reservation(),
            Some(Reservation {
                ty: PrType::WriteExclusiveRegistrantsOnly,
                holder: A.id
            })
        );
        assert_eq!(
            out(&mut st, B, PREEMPT, 1, 0xB0, 0).0,
            Err(PrError::Check(Sense::invalid_param_field(8, None)))
        );
    }

    #[test]
    fn preempt_all_registrants() {
        for t in [
            PrType::WriteExclusiveAllRegistrants,
            PrType::ExclusiveAccessAllRegistrants,
        ] {
            for new in PrType::ALL {
                let mut st = three();
                ok(&mut st, A, RESERVE, t.code(), 0xA0, 0);
                let ev = ok(&mut st, B, PREEMPT, new.code(), 0xB0, 0);
                assert_eq!(
                    ev,
                    [
                        ua(A, Sense::REGISTRATIONS_PREEMPTED),
                        ua(C, Sense::REGISTRATIONS_PREEMPTED)
                    ]
                );
                assert_eq!(st.registrations().len(), 1);
                let r = st.reservation().unwrap();
                assert_eq!(r.ty, new);
                assert!(st.is_holder(B.id));
            }
            // A non-zero key only removes registrations.
            let mut st = three();
            ok(&mut st, A, RESERVE, t.code(), 0xA0, 0);
            let ev = ok(&mut st, B, PREEMPT, 1, 0xB0, 0xC0);
            assert_eq!(ev, [ua(C, Sense::REGISTRATIONS_PREEMPTED)]);
            assert_eq!(st.reservation().map(|r| r.ty), Some(t));
            // Preempting everybody else and then oneself ends the reservation.
            ok(&mut st, B, PREEMPT, 1, 0xB0, 0xA0);
            ok(&mut st, B, PREEMPT, 1, 0xB0, 0xB0);
            assert_eq!(st.reservation(), None);
            assert!(st.registrations().is_empty());
        }
    }

    #[test]
    fn preempt_and_abort_reports_aborts() {
        let mut st = three();
        ok(&mut st, A, RESERVE, 3, 0xA0, 0);
        let ev = ok(&mut st, B, PREEMPT_ABORT, 3, 0xB0, 0xA0);
        assert_eq!(
            ev,
            [
                ua(A, Sense::REGISTRATIONS_PREEMPTED),
                PrEvent::Abort { nexus: A.id }
            ]
        );
        // The issuer's own nexus is never aborted.
        let ev = ok(&mut st, B, PREEMPT_ABORT, 3, 0xB0, 0xB0);
        assert!(ev.is_empty());
        let ids: Vec<_> = st.registrations().iter().map(|r| r.nexus.id).collect();
        assert_eq!(ids, [B.id, C.id]);
        // PREEMPT (without abort) never asks for aborts.
        let mut st = three();
        let ev = ok(&mut st, A, PREEMPT, 3, 0xA0, 0xC0);
        assert!(!ev.iter().any(|e| matches!(e, PrEvent::Abort { .. })));
    }

    const READ: &[u8] = &[op::READ_10, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    const WRITE: &[u8] = &[op::WRITE_16];
    const ALLOWED: &[u8] = &[op::INQUIRY];

    #[test]
    fn conflict_table() {
        // (type, [holder, registered, unregistered] x [read, write, allowed])
        for t in PrType::ALL {
            let mut st = three();
            ok(&mut st, A, RESERVE, t.code(), 0xA0, 0);
            let ea = t.exclusive_access();
            let ro_or_ar = t.registrants_only() || t.all_registrants();
            for (who, registered) in [(A, true), (B, true), (D, false)] {
                let exempt = who == A || (ro_or_ar && registered);
                assert!(!st.conflicts(who.id, ALLOWED));
                assert_eq!(st.conflicts(who.id, READ), !exempt && ea, "{t:?} {who:?}");
                assert_eq!(st.conflicts(who.id, WRITE), !exempt, "{t:?} {who:?}");
            }
        }
        // No reservation: no conflict, registered or not.
        let st = three();
        assert!(!st.conflicts(D.id, WRITE));
        assert!(!PrState::new().conflicts(A.id, WRITE));
    }

    #[test]
    fn access_classes() {
        use PrAccess::*;
        let cases: &[(&[u8], PrAccess)] = &[
            (&[], Write),
            (&[op::TEST_UNIT_READY], Allowed),
            (&[op::REQUEST_SENSE], Allowed),
            (&[op::REPORT_LUNS], Allowed),
            (&[op::READ_CAPACITY_10], Allowed),
            (&[op::SERVICE_ACTION_IN_16, 0x10], Allowed),
            (&[op::SERVICE_ACTION_IN_16, 0x12], Read),
            (&[op::SERVICE_ACTION_IN_12, 0x01], Allowed),
            (&[op::MAINTENANCE_IN, 0x0A], Allowed),
            (&[op::MAINTENANCE_OUT, 0x0A], Write),
            (&[op::PERSISTENT_RESERVE_IN], Allowed),
            (&[op::PERSISTENT_RESERVE_OUT], Allowed),
            (&[op::PREVENT_ALLOW, 0, 0, 0, 0], Allowed),
            (&[op::PREVENT_ALLOW, 0, 0, 0, 1], Write),
            (&[op::START_STOP_UNIT, 0, 0, 0, 1], Allowed),
            (&[op::START_STOP_UNIT, 0, 0, 0, 0], Write),
            (&[op::START_STOP_UNIT, 0, 0, 0, 0x11], Write),
            (&[op::READ_6], Read),
            (&[op::READ_12], Read),
            (&[op::READ_16], Read),
            (&[op::VERIFY_16], Read),
            (&[op::MODE_SENSE_10], Read),
            (&[op::READ_BUFFER_10], Read),
            (
                &[op::VARIABLE_LENGTH, 0, 0, 0, 0, 0, 0, 0x18, 0, 0x09],
                Read,
            ),
            (
                &[op::VARIABLE_LENGTH, 0, 0, 0, 0, 0, 0, 0x18, 0, 0x0B],
                Write,
            ),
            (&[op::VARIABLE_LENGTH], Write),
            (&[op::WRITE_6], Write),
            (&[op::WRITE_SAME_16], Write),
            (&[op::UNMAP], Write),
            (&[op::COMPARE_AND_WRITE], Write),
            (&[op::SYNCHRONIZE_CACHE_10], Write),
            (&[op::MODE_SELECT_6], Write),
            (&[op::RESERVE_6], Write),
            (&[op::RELEASE_10], Write),
            (&[op::EXTENDED_COPY], Write),
            (&[0xC0], Write),
        ];
        for (c, want) in cases {
            assert_eq!(access_class(c), *want, "{c:x?}");
        }
    }

    fn tid(n: NexusId, buf: &mut [u8]) -> usize {
        sas_transport_id(0x5000_0000_0000_0000 | n, buf)
    }

    fn pr_in(st: &PrState, sa: u8, alloc: u16) -> Result<Vec<u8>, Sense> {
        let a = alloc.to_be_bytes();
        let c = [0x5E, sa, 0, 0, 0, 0, 0, a[0], a[1], 0];
        let mut b = [0u8; 8192];
        let r = st.pr_in(&c, &tid, &mut b)?;
        Ok(b[..r.len].to_vec())
    }

    #[test]
    fn read_keys() {
        let st = three();
        let d = pr_in(&st, 0, 0xFFFF).unwrap();
        assert_eq!(&d[..8], &[0, 0, 0, 3, 0, 0, 0, 24]);
        assert_eq!(&d[8..16], &0xA0u64.to_be_bytes());
        assert_eq!(&d[24..32], &0xC0u64.to_be_bytes());
        assert_eq!(d.len(), 32);
        let d = pr_in(&PrState::new(), 0, 0xFFFF).unwrap();
        assert_eq!(d, [0; 8]);
        // Clipped to the allocation length.
        let d = pr_in(&st, 0, 12).unwrap();
        assert_eq!(d.len(), 12);
    }

    #[test]
    fn read_reservation() {
        let mut st = three();
        assert_eq!(pr_in(&st, 1, 100).unwrap(), [0, 0, 0, 3, 0, 0, 0, 0]);
        ok(&mut st, B, RESERVE, 6, 0xB0, 0);
        let d = pr_in(&st, 1, 100).unwrap();
        assert_eq!(d.len(), 24);
        assert_eq!(&d[4..8], &[0, 0, 0, 16]);
        assert_eq!(&d[8..16], &0xB0u64.to_be_bytes());
        assert_eq!(d[21], 0x06);
        let mut st = three();
        ok(&mut st, B, RESERVE, 8, 0xB0, 0);
        let d = pr_in(&st, 1, 100).unwrap();
        assert_eq!(&d[8..16], &[0; 8], "All Registrants reports key 0");
        assert_eq!(d[21], 0x08);
    }

    #[test]
    fn report_capabilities_bytes() {
        let d = pr_in(&PrState::new(), 2, 100).unwrap();
        assert_eq!(d, [0, 8, 0x10, 0x90, 0xEA, 0x01, 0, 0]);
    }

    #[test]
    fn read_full_status() {
        let mut st = three();
        ok(&mut st, C, RESERVE, 5, 0xC0, 0);
        let d = pr_in(&st, 3, 0xFFFF).unwrap();
        assert_eq!(&d[..4], &st.generation().to_be_bytes());
        let per = 24 + 24;
        assert_eq!(d.len(), 8 + 3 * per);
        assert_eq!(&d[4..8], &((3 * per) as u32).to_be_bytes());
        for (i, (n, key)) in [(A, 0xA0u64), (B, 0xB0), (C, 0xC0)].iter().enumerate() {
            let e = &d[8 + i * per..8 + (i + 1) * per];
            assert_eq!(&e[..8], &key.to_be_bytes());
            let holder = *n == C;
            assert_eq!(e[12], u8::from(holder));
            assert_eq!(e[13], if holder { 5 } else { 0 });
            assert_eq!(&e[18..20], &n.rel_port.to_be_bytes());
            assert_eq!(&e[20..24], &[0, 0, 0, 24]);
            assert_eq!(e[24], 0x06);
            assert_eq!(&e[28..36], &(0x5000_0000_0000_0000 | n.id).to_be_bytes());
        }
        // All Registrants: every registrant is a holder.
        let mut st = three();
        ok(&mut st, C, RESERVE, 7, 0xC0, 0);
        let d = pr_in(&st, 3, 0xFFFF).unwrap();
        for i in 0..3 {
            assert_eq!(d[8 + i * per + 12], 1);
            assert_eq!(d[8 + i * per + 13], 7);
        }
        // An over-long TransportID callback is clipped.
        let big = |_: NexusId, b: &mut [u8]| {
            b.iter_mut().for_each(|x| *x = 0xEE);
            10_000
        };
        let mut b = std::vec![0u8; 4096];
        let n = st.read_full_status(&big, &mut b);
        assert_eq!(n, 8 + 3 * (24 + MAX_TRANSPORT_ID));
    }

    #[test]
    fn pr_in_checks() {
        assert_eq!(
            pr_in(&PrState::new(), 4, 100),
            Err(Sense::invalid_cdb_field(1, Some(4)))
        );
        let mut b = [0u8; 8];
        assert_eq!(
            PrState::new().pr_in(&[0x5E, 0], &tid, &mut b),
            Err(Sense::invalid_cdb_field(0, None))
        );
        assert_eq!(pr_in(&three(), 0, 0).unwrap(), []);
    }

    #[test]
    fn transport_ids() {
        let mut b = [0u8; 300];
        let n = iscsi_transport_id(b"iqn.a", Some(&[0x80, 0, 0x12, 0x34, 0, 1]), &mut b);
        // 5 + 17 + NUL = 23 -> 24.
        assert_eq!(n, 28);
        assert_eq!(&b[..4], &[0x45, 0, 0, 24]);
        assert_eq!(&b[4..26], b"iqn.a,i,0x800012340001");
        assert_eq!(&b[26..28], &[0, 0]);
        let n = iscsi_transport_id(b"iqn.a", None, &mut b);
        assert_eq!(n, 24, "padded to the 20-byte minimum");
        assert_eq!(&b[..9], &[0x05, 0, 0, 20, b'i', b'q', b'n', b'.', b'a']);
        let long = [b'x'; 400];
        let n = iscsi_transport_id(&long, Some(&[1; 6]), &mut b);
        assert_eq!(n, MAX_TRANSPORT_ID);
        assert_eq!(n % 4, 0);
        let n = iscsi_transport_id(&long, None, &mut b);
        assert!(n <= MAX_TRANSPORT_ID && n.is_multiple_of(4));
        assert_eq!(b[n - 1], 0);
        assert_eq!(sas_transport_id(0x0102030405060708, &mut b), 24);
        assert_eq!(&b[..12], &[6, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(fc_transport_id(0x1122334455667788, &mut b), 24);
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(sas_transport_id(1, &mut []), 24);
    }

    #[test]
    fn snapshot_layout() {
        let mut st = PrState::new();
        ok(&mut st, A, REGISTER, 0, 0, 0x1122);
        ok(&mut st, A, RESERVE, 3, 0x1122, 0);
        let mut b = [0u8; 64];
        let n = st.encode(&mut b).unwrap();
        assert_eq!(n, 38);
        assert_eq!(
            &b[..20],
            &[1, 1, 3, 0, 1, 0, 0, 0, 0xA, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            &b[20..38],
            &[0xA, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x22, 0x11, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            st.encode(&mut b[..37]),
            Err(SnapshotError::BufferTooSmall { need: 38 })
        );
        let empty = PrState::new();
        assert_eq!(empty.encode(&mut b), Ok(20));
        assert_eq!(
            &b[..20],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    /// Sends `st` through a builder part by part, as the interlink does,
    /// with the peer's nexus ids mapped by `map`.
    fn rebuild(st: &PrState, map: impl Fn(Nexus) -> Nexus) -> Result<PrState, SnapshotError> {
        let regs = st.registrations();
        let holder = st.reservation().and_then(|r| regs.iter().position(|g| g.nexus.id == r.holder && !r.ty.all_registrants()));
        let mut b = SnapshotBuilder::begin(
            7,
            1,
            st.generation(),
            regs.len() as u16,
            st.reservation().map_or(0, |r| r.ty.code()),
            holder.map(|h| h as u16),
        )?;
        for (i, g) in regs.iter().enumerate() {
            b.add(7, 1, i as u16, map(g.nexus), g.key)?;
        }
        let mut out = PrState::new();
        b.finish(7, 1, &mut out)?;
        Ok(out)
    }

    #[test]
    fn snapshot_builder_reproduces_every_reservation_type() {
        for ty in PrType::ALL {
            let mut st = three();
            ok(&mut st, B, RESERVE, ty.code(), 0xB0, 0);
            assert_eq!(rebuild(&st, |n| n), Ok(st.clone()), "{ty:?}");
            // With the ids mapped, the same nexus holds it.
            let moved = rebuild(&st, |n| Nexus { id: n.id + 0x100, rel_port: n.rel_port }).unwrap();
            assert_eq!(moved.generation(), st.generation());
            assert_eq!(moved.registrations().len(), 3);
            let r = moved.reservation().unwrap();
            assert_eq!(r.ty, ty);
            if !ty.all_registrants() {
                assert_eq!(r.holder, 0xB + 0x100);
            }
        }
        assert_eq!(rebuild(&PrState::new(), |n| n), Ok(PrState::new()));
    }

    #[test]
    fn requests_and_outcomes_cross_the_wire() {
        for action in 0..=6u8 {
            for ty in [0u8, 1, 3, 5, 6, 7, 8] {
                let Some(r) = ProutRequest::from_wire(action, ty, 0x11, 0x22) else {
                    // Only a type where none is taken, or none where one is.
                    let uses = ProutAction::from_u8(action).unwrap().uses_type();
                    assert_eq!(uses, ty == 0, "{action} {ty}");
                    continue;
                };
                assert_eq!(r.wire_codes(), (action, ty));
                assert_eq!((r.key, r.sa_key), (0x11, 0x22));
            }
        }
        assert!(ProutRequest::from_wire(7, 0, 1, 1).is_none());
        assert!(ProutRequest::from_wire(1, 2, 1, 1).is_none());
        // The parser's requests survive the trip.
        let mut params = [0u8; 24];
        params[..8].copy_from_slice(&0xAAu64.to_be_bytes());
        let req = ProutRequest::parse(&[0x5F, 0x01, 0x03, 0, 0, 0, 0, 0, 24, 0], &params).unwrap();
        let (a, t) = req.wire_codes();
        assert_eq!(ProutRequest::from_wire(a, t, req.key, req.sa_key), Some(req));
        for r in [Ok(()), Err(PrError::Conflict), Err(PrError::Check(Sense::INVALID_RELEASE_OF_PR))] {
            let (st, sense) = outcome_to_wire(r);
            assert_eq!(outcome_from_wire(st, sense), r);
        }
        let odd = outcome_from_wire(STATUS_CHECK, [0x0C, 1, 2]);
        assert_eq!(odd, Err(PrError::Check(Sense::new(SenseKey::HardwareError, 1, 2))));
    }

    #[test]
    fn snapshot_builder_rejects_bad_sequences() {
        let mut target = three();
        let before = target.clone();
        let n = |id| Nexus { id, rel_port: 0x21 };
        assert_eq!(SnapshotBuilder::begin(7, 1, 1, 129, 0, None).err(), Some(SnapshotError::TooMany(129)));
        assert_eq!(SnapshotBuilder::begin(7, 1, 1, 2, 1, Some(2)).err(), Some(SnapshotError::Holder));
        let mut b = SnapshotBuilder::begin(7, 1, 5, 2, 1, Some(1)).unwrap();
        assert_eq!(b.lun_id(), 7);
        assert_eq!(b.add(8, 1, 0, n(1), 1), Err(SnapshotError::Sequence));
        assert_eq!(b.add(7, 2, 0, n(1), 1), Err(SnapshotError::Sequence));
        assert_eq!(b.add(7, 1, 1, n(1), 1), Err(SnapshotError::Sequence));
        assert_eq!(b.add(7, 1, 0, n(1), 0), Err(SnapshotError::ZeroKey));
        b.add(7, 1, 0, n(1), 0x10).unwrap();
        assert_eq!(b.finish(7, 1, &mut target), Err(SnapshotError::Incomplete { count: 2, got: 1 }));
        assert_eq!(b.finish(7, 2, &mut target), Err(SnapshotError::Sequence));
        // The same nexus twice is caught by the final check.
        b.add(7, 1, 1, n(1), 0x11).unwrap();
        assert_eq!(b.add(7, 1, 2, n(2), 0x12), Err(SnapshotError::Sequence));
        assert_eq!(b.finish(7, 1, &mut target), Err(SnapshotError::Duplicate(1)));
        assert_eq!(target, before);
        // All Registrants without registrants, a holder-less exclusive type.
        let b = SnapshotBuilder::begin(7, 1, 5, 0, 8, None).unwrap();
        assert_eq!(b.finish(7, 1, &mut target), Err(SnapshotError::Holder));
        let mut b = SnapshotBuilder::begin(7, 1, 5, 1, 1, None).unwrap();
        b.add(7, 1, 0, n(1), 0x10).unwrap();
        assert_eq!(b.finish(7, 1, &mut target), Err(SnapshotError::Holder));
        assert_eq!(target, before);
        assert_eq!(SnapshotBuilder::begin(7, 1, 5, 0, 2, None).unwrap().finish(7, 1, &mut target), Err(SnapshotError::Type(2)));
        assert_eq!(target, before);
    }

    #[test]
    fn snapshot_decode_rejects() {
        let mut st = three();
        ok(&mut st, B, RESERVE, 1, 0xB0, 0);
        let mut good = [0u8; 128];
        let n = st.encode(&mut good).unwrap();
        let good = &good[..n];
        let mut target = PrState::new();
        ok(&mut target, D, REGISTER, 0, 0, 0xD0);
        let before = target.clone();
        let mut bad = |f: &dyn Fn(&mut Vec<u8>), want: SnapshotError| {
            let mut v = good.to_vec();
            f(&mut v);
            assert_eq!(target.decode_into(&v), Err(want));
            assert_eq!(target, before);
        };
        bad(&|v| v.truncate(19), SnapshotError::Truncated { have: 19 });
        bad(&|v| v[0] = 2, SnapshotError::Version(2));
        bad(&|v| v[1] = 3, SnapshotError::Reserved);
        bad(&|v| v[3] = 1, SnapshotError::Reserved);
        bad(&|v| v[18] = 1, SnapshotError::Reserved);
        bad(&|v| v[2] = 2, SnapshotError::Type(2));
        bad(
            &|v| {
                v[1] = 0;
            },
            SnapshotError::Type(1),
        );
        bad(
            &|v| {
                v[1] = 0;
                v[2] = 0;
            },
            SnapshotError::Holder,
        );
        bad(&|v| v[16] = 129, SnapshotError::TooMany(129));
        bad(
            &|v| v[16] = 2,
            SnapshotError::Length {
                expected: 56,
                actual: 74,
            },
        );
        bad(
            &|v| v.push(0),
            SnapshotError::Length {
                expected: 74,
                actual: 75,
            },
        );
        bad(
            &|v| v.truncate(73),
            SnapshotError::Length {
                expected: 74,
                actual: 73,
            },
        );
        bad(&|v| v[30..38].fill(0), SnapshotError::ZeroKey);
        bad(&|v| v[38] = 0xA, SnapshotError::Duplicate(0xA));
        bad(&|v| v[8] = 0xD, SnapshotError::Holder);
        bad(&|v| v[2] = 7, SnapshotError::Holder);
        bad(
            &|v| {
                v[2] = 7;
                v[8..16].fill(0);
                v[16] = 0;
                v.truncate(20);
            },
            SnapshotError::Holder,
        );
        // A good one replaces everything.
        target.decode_into(good).unwrap();
        assert_eq!(target, st);
        // Every truncation of a good snapshot is refused, never a panic.
        for len in 0..good.len() {
            assert!(PrState::new().decode_into(&good[..len]).is_err());
        }
        // Error messages name the values.
        let msg = std::format!(
            "{}",
            SnapshotError::Length {
                expected: 1,
                actual: 2
            }
        );
        assert!(msg.contains('1') && msg.contains('2'));
    }

    #[test]
    fn hand_built_request_without_type() {
        let mut st = three();
        let req = ProutRequest {
            action: ProutAction::Reserve,
            ty: None,
            key: 0xA0,
            sa_key: 0,
        };
        assert_eq!(
            st.apply(A, &req, &mut |_| {}),
            Err(PrError::Check(Sense::invalid_cdb_field(2, Some(3))))
        );
        assert_eq!(st.reservation(), None);
    }

    #[test]
    fn reset_and_default() {
        let mut st = three();
        st.reset();
        assert_eq!(st, PrState::default());
    }

    /// Pseudo-random operation sequences: no panic, invariants hold,
    /// replay on a "peer" gives the same state, and decode never panics on
    /// mangled snapshots.
    #[test]
    fn random_sequences() {
        let nexuses = [A, B, C, D];
        let keys = [0u64, 0xA0, 0xB0, 0xC0, 0xD0];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut st = PrState::new();
            let mut peer = PrState::new();
            for _ in 0..60 {
                let n = nexuses[(next() % 4) as usize];
                let sa = (next() % 7) as u8;
                let ty = [1u8, 3, 5, 6, 7, 8][(next() % 6) as usize];
                let key = if next() % 3 == 0 {
                    keys[(next() % 5) as usize]
                } else {
                    st.key_of(n.id).unwrap_or(0)
                };
                let sa_key = keys[(next() % 5) as usize];
                let (r, _) = out(&mut st, n, sa, ty, key, sa_key);
                let req = ProutRequest::parse(&cdb(sa, ty), &params(key, sa_key, 0)).unwrap();
                assert_eq!(peer.apply(n, &req, &mut |_| {}), r);
                assert_eq!(peer, st);
                for c in [READ, WRITE, ALLOWED] {
                    let _ = st.conflicts(n.id, c);
                }
            }
            let mut b = [0u8; 4096];
            let len = st.encode(&mut b).unwrap();
            for _ in 0..20 {
                let mut v = b[..len].to_vec();
                let i = (next() as usize) % len;
                v[i] ^= 1 << (next() % 8);
                let mut t = PrState::new();
                if t.decode_into(&v).is_ok() {
                    check_invariants(&t);
                }
            }
        }
    }
}
