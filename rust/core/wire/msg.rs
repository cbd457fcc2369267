// SPDX-License-Identifier: GPL-2.0

//! Interlink messages: type numbers, payload layouts and their codec.
//!
//! All multi-byte fields are little-endian; there is no padding and no
//! alignment. Every payload has a fixed length, so a payload of any other
//! length is rejected ([`WireError::PayloadTooShort`] or
//! [`WireError::TrailingPayload`]).
//!
//! | type     | message      | len | payload layout (offset: field)                      |
//! |----------|--------------|----:|-----------------------------------------------------|
//! | `0x0001` | Hello        |  33 | 0: nonce `[u8; 32]`, 32: ha_id `u8`                  |
//! | `0x0002` | AuthResponse |  32 | 0: HMAC-SHA256 `[u8; 32]` (see [`super::handshake`]) |
//! | `0x0003` | AuthResult   |   1 | 0: result `u8` (1 ok, 2 failed)                      |
//! | `0x0010` | Login        |  40 | 0: version `u16`, 2: ha_mode `u8`, 3: ha_id `u8`, 4: max_payload `u32`, 8: max_inflight `u32`, 12: max_luns `u32`, 16: max_ports `u32`, 20: max_inits_per_port `u32`, 24: features `u64`, 32: node_id `u64` |
//! | `0x0011` | LoginAck     |   0 | (empty)                                             |
//! | `0x0012` | LoginReject  |  18 | 0: reason `u16`, 2: sender_value `u64`, 10: receiver_value `u64` |
//! | `0x0020` | Heartbeat    |   8 | 0: counter `u64`                                    |
//! | `0x0021` | HeartbeatAck |   8 | 0: counter `u64` (echoed)                           |
//! | `0x0030` | Bye          |   2 | 0: reason `u16`                                     |
//! | `0x0100` | LunState     | 116 | 0: lun_id `u32`, 4: role `u8` (1 primary, 2 secondary), 5: port count `u8` (≤ 16), 6: reserved `u16` (0), 8: block_size `u32`, 12: blocks `u64`, 20: unit serial `[u8; 64]` (NUL-padded), 84: relative target port ids `[u16; 16]` |
//! | `0x0101` | LunGone      |   4 | 0: lun_id `u32`                                     |
//! | `0x0110` | PrBegin      |  20 | 0: lun_id `u32`, 4: snapshot `u32`, 8: PR generation `u32`, 12: registration count `u16` (≤ 128), 14: reservation type `u8` (0 none, else the SPC code), 15: reserved `u8` (0), 16: holder index `u16` (0xFFFF: none or All Registrants), 18: reserved `u16` (0) |
//! | `0x0111` | PrReg        | 264 | 0: lun_id `u32`, 4: snapshot `u32`, 8: index `u16`, 10: relative target port `u16`, 12: key `u64` (≠ 0), 20: protocol id `u8` (≤ 0x0F), 21: ISID length `u8` (≤ 16), 22: name length `u16` (1..=223), 24: ISID `[u8; 16]`, 40: initiator port name `[u8; 224]` (zero-padded) |
//! | `0x0112` | PrEnd        |   8 | 0: lun_id `u32`, 4: snapshot `u32`                   |
//! | `0x0114` | PrOut        | 272 | 0: tag `u32`, 4: lun_id `u32`, 8: relative target port `u16`, 10: service action `u8` (0..=6), 11: reservation type `u8` (0 none, else the SPC code), 12: reservation key `u64`, 20: service action key `u64`, 28: initiator port (as in PrReg at 20) |
//! | `0x0115` | PrOutDone    |  12 | 0: tag `u32`, 4: lun_id `u32`, 8: status `u8` (0 GOOD, 0x02 CHECK CONDITION, 0x18 RESERVATION CONFLICT), 9: sense key `u8`, 10: ASC `u8`, 11: ASCQ `u8` (0 unless CHECK CONDITION) |
//! | `0x0116` | UaNexus      | 254 | 0: lun_id `u32`, 4: relative target port `u16`, 6: ASC `u8`, 7: ASCQ `u8`, 8: reserved `u16` (0), 10: initiator port (as in PrReg at 20) |
//! | `0x0117` | UaAll        |   8 | 0: lun_id `u32`, 4: ASC `u8`, 5: ASCQ `u8`, 6: reserved `u16` (0) |
//! | `0x0118` | ModePages    |  12 | 0: lun_id `u32`, 4: generation `u32`, 8: flags `u8` (bit 0 WCE, others 0), 9: reserved `[u8; 3]` (0) |
//! | `0x0119` | AbortNexus   | 256 | 0: lun_id `u32`, 4: token `u32`, 8: relative target port `u16`, 10: reserved `u16` (0), 12: initiator port (as in PrReg at 20) |
//! | `0x011A` | AbortDone    |   8 | 0: lun_id `u32`, 4: token `u32`                      |
//! | `0x011B` | AbortLun     |   8 | 0: lun_id `u32`, 4: token `u32`                      |
//! | `0x0120` | IoReq        |  24 | 0: tag `u32`, 4: lun_id `u32`, 8: op `u8` (1 read, 2 write, 3 flush, 4 deallocate, 5 write zeroes, 6 write same, 7 compare and write), 9: flags `u8` (bit 0 FUA, bit 1 ORDERED task, bit 2 HEAD OF QUEUE task: read and write only, not both; others 0), 10: reserved `u16` (0), 12: first 512-byte sector `u64`, 20: length `u32`: for read and write, bytes (a multiple of 512, ≤ 8 MiB); 0 for flush; for ops 4 to 6, 512-byte sectors (≥ 1); for compare and write, the bytes compared (a multiple of 512, ≤ 64 KiB) |
//! | `0x0121` | IoData       | 9..=65544 | 0: tag `u32`, 4: offset `u32`, 8: 1 to 65536 data bytes (offset + length ≤ 8 MiB) |
//! | `0x0122` | IoDone       |  12 | 0: tag `u32`, 4: lun_id `u32`, 8: status `u8` (0 done, 1..=63 the block layer's error status, 0x80 not held here, 0x81 busy, 0x82 miscompare, 0x83 aborted before it ran), 9: for a miscompare, the offset of the first differing byte `[u8; 3]` (little-endian), else reserved (0) |
//! | `0x0123` | IoAbort      |   8 | 0: tag `u32`, 4: lun_id `u32`                        |
//! | `0x0130` | OrderReq     |  24 | 0: tag `u32` (bit 31 clear), 4: lun_id `u32`, 8: access `u8` (1 read, 2 write, 3 all: an ORDERED task), 9: reserved `[u8; 3]` (0), 12: first 512-byte sector `u64` (0 for all), 20: sectors `u32` (1..=2^23, ≤ 4 GiB; 0 for all) |
//! | `0x0131` | OrderGrant   |  12 | 0: tag `u32`, 4: lun_id `u32`, 8: status `u8` (0 go, 0x80 not held here, 0x81 busy), 9: reserved `[u8; 3]` (0) |
//! | `0x0132` | OrderDone    |   8 | 0: tag `u32`, 4: lun_id `u32`                        |
//!
//! A persistent-reservation snapshot of one LUN is `PrBegin`, then `count`
//! `PrReg` with indexes 0, 1, … in order, then `PrEnd`, all with the same
//! lun_id and snapshot number; registrations name their I_T nexus by its
//! initiator port (protocol, name, ISID) and relative target port, never by
//! a local handle. See [`crate::core_logic::scsi::pr::SnapshotBuilder`].
//!
//! `PrOut` carries a PERSISTENT RESERVE OUT, already parsed and checked by
//! the node it arrived at, to the LUN's primary, which executes it for that
//! I_T nexus and answers with `PrOutDone` (same tag) after the snapshot that
//! reflects it.
//!
//! `IoReq` asks the primary of a LUN to do block IO on its backing device
//! for a command received by the secondary (mode 2, proxy): the secondary
//! has parsed the command and made the SCSI checks; the primary only moves
//! the data. A write's data follows in `IoData` frames with the same tag,
//! in order from offset 0; a read's data comes back the same way, before
//! the `IoDone` that ends the tag. Deallocate (UNMAP) and write zeroes move
//! no data; write same sends one logical block (the LUN's block size, the
//! same on both nodes), which the primary writes to every block of the
//! range. Compare and write sends twice `length` bytes (the data to compare,
//! then the data to write); the primary compares and writes under the LUN's
//! COMPARE AND WRITE lock, so that a COMPARE AND WRITE received by either
//! node is atomic against every other, and answers miscompare with the
//! offset of the first byte that differs.
//!
//! `OrderReq` asks the primary of a LUN for leave to run one block IO
//! (mode 1, serialize-only: both nodes hold the shared backing device):
//! the secondary sends it before each read or write it runs on that device,
//! naming the range, and runs the IO only on `OrderGrant` go (same tag).
//! WRITE SAME and UNMAP ask for their whole range as a write (up to 2^23
//! sectors: one UNMAP descriptor of 1 Mi 4 KiB blocks). A read or write of
//! an ORDERED task asks with access "all": it is ordered as a write over the
//! whole LUN, so it runs after every IO of the other node before it and
//! every IO of the other node after it waits for it.
//! The primary grants once no IO of its own overlapping the range (for a
//! read, no write of its own) is in flight, and holds back its own
//! overlapping IO from then until the secondary's `OrderDone` (same tag)
//! says the IO has completed. A grant with another status (not held, busy)
//! ends the request; no `OrderDone` follows it. Both sides forget all
//! orders when the link goes down.
//!
//! `UaNexus` establishes a UNIT ATTENTION (ASC/ASCQ) for one I_T nexus of the
//! receiver (a PR unit attention for a registrant logged in there);
//! `UaAll` for every I_T nexus of the LUN on the receiver (a LUN reset).
//!
//! `AbortNexus` (primary to secondary) carries PREEMPT AND ABORT to the
//! receiver: every command of that I_T nexus it holds for the LUN is
//! aborted (completed with TASK ABORTED once its IO has ended). The
//! receiver answers `AbortDone` with the highest token whose commands have
//! all ended; the primary completes the PR OUT after that (and after its
//! own aborted commands), so no IO of a preempted nexus lands afterwards.
//!
//! `AbortLun` (either node to the other) carries a LOGICAL UNIT RESET: the
//! receiver aborts every command it holds for the LUN, whatever its I_T
//! nexus, and answers `AbortDone` with the token once they have ended; the
//! sender's reset completes after that.
//!
//! `ModePages` carries a LUN's changeable mode parameters (the caching
//! page's WCE) with their generation, bumped by each MODE SELECT that
//! changed them. Each side sends it at link up and on change; the higher
//! generation wins, and at equal generations the primary's values.
//!
//! Reason codes (LoginReject, Bye) are open sets: an unknown non-zero code is
//! kept as `Other(code)` so a peer's newer reason still reaches the log. Code 0
//! is never valid.

use super::bytes::{Reader, Writer};
use crate::core_logic::control::MAX_LUN_ID;
use super::{EncodeError, WireError};
use core::fmt;

/// Length of an authentication nonce in bytes.
pub(crate) const NONCE_LEN: usize = 32;

/// Length of an HMAC-SHA256 tag in bytes.
pub(crate) const MAC_LEN: usize = 32;

/// Largest payload of any message this version defines (sizes send buffers).
pub(crate) const MAX_MESSAGE_PAYLOAD: usize = PR_OUT_LEN;

/// Longest initiator port name a [`PrReg`] carries (an iSCSI name).
pub(crate) const PR_NAME_LEN: usize = 223;
/// Longest ISID text a [`PrReg`] carries.
pub(crate) const PR_ISID_LEN: usize = 16;
/// Registrations one snapshot can hold.
pub(crate) const PR_MAX_REGS: u16 = 128;
/// Payload length of [`PrBegin`].
const PR_BEGIN_LEN: usize = 20;
/// Payload length of [`PrReg`].
const PR_REG_LEN: usize = 20 + PORT_NAME_LEN;
/// Payload length of [`PrEnd`].
const PR_END_LEN: usize = 8;
/// Length of a [`PortName`] on the wire.
const PORT_NAME_LEN: usize = 4 + PR_ISID_LEN + PR_NAME_LEN + 1;
/// Payload length of [`PrOut`].
const PR_OUT_LEN: usize = 28 + PORT_NAME_LEN;
/// Payload length of [`PrOutDone`].
const PR_OUT_DONE_LEN: usize = 12;
/// Payload length of [`UaNexus`].
const UA_NEXUS_LEN: usize = 10 + PORT_NAME_LEN;
/// Payload length of a UaAll.
const UA_ALL_LEN: usize = 8;
/// Payload length of [`ModePages`].
const MODE_PAGES_LEN: usize = 12;
/// Payload length of [`AbortNexus`].
const ABORT_NEXUS_LEN: usize = 12 + PORT_NAME_LEN;
/// Payload length of [`AbortDone`].
const ABORT_DONE_LEN: usize = 8;
/// Payload length of [`AbortLun`].
const ABORT_LUN_LEN: usize = 8;

/// Payload length of [`IoReq`].
const IO_REQ_LEN: usize = 24;
/// Length of the fields of an IoData before its data.
pub(crate) const IO_DATA_HEAD: usize = 8;
/// Data bytes one IoData frame carries at most.
pub(crate) const IO_CHUNK: usize = 64 * 1024;
/// Longest IO one IoReq asks for (the backstore advertises 8 MiB).
pub(crate) const MAX_IO_BYTES: u32 = 8 * 1024 * 1024;
/// Longest range a compare and write IoReq compares (LIO allows one
/// logical block; 64 KiB bounds what the primary buffers for it).
pub(crate) const MAX_CAW_BYTES: u32 = 64 * 1024;
/// Highest sector an IoReq or OrderReq range may end at (byte offsets
/// fit in `u64`).
const MAX_SECTOR: u64 = u64::MAX >> 9;
/// Payload length of [`IoDone`].
const IO_DONE_LEN: usize = 12;
/// Payload length of [`IoAbort`].
const IO_ABORT_LEN: usize = 8;

/// Payload length of [`OrderReq`].
const ORDER_REQ_LEN: usize = 24;
/// Longest range one OrderReq names, in 512-byte sectors (4 GiB: one UNMAP
/// descriptor of the most blocks the backstore accepts, 1 Mi of 4 KiB).
pub(crate) const MAX_ORDER_SECTORS: u32 = 1 << 23;
/// Payload length of [`OrderGrant`].
const ORDER_GRANT_LEN: usize = 12;
/// Payload length of [`OrderDone`].
const ORDER_DONE_LEN: usize = 8;

/// Target ports a [`LunState`] can list.
pub(crate) const MAX_LUN_PORTS: usize = 16;
/// Bytes of the unit serial a [`LunState`] carries.
pub(crate) const SERIAL_LEN: usize = 64;
/// Payload length of [`LunState`].
const LUN_STATE_LEN: usize = 20 + SERIAL_LEN + 2 * MAX_LUN_PORTS;
/// Payload length of a LunGone.
const LUN_GONE_LEN: usize = 4;

/// Payload length of [`Hello`].
const HELLO_LEN: usize = NONCE_LEN + 1;
/// Payload length of [`AuthResponse`].
const AUTH_RESPONSE_LEN: usize = MAC_LEN;
/// Payload length of [`AuthResult`].
const AUTH_RESULT_LEN: usize = 1;
/// Payload length of [`Login`].
const LOGIN_LEN: usize = 40;
/// Payload length of [`LoginReject`].
const LOGIN_REJECT_LEN: usize = 18;
/// Payload length of a heartbeat and its acknowledgement.
const HEARTBEAT_LEN: usize = 8;
/// Payload length of a Bye.
const BYE_LEN: usize = 2;

/// Message type number, the header's `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum MsgType {
    /// Authentication challenge: the sender's nonce and ha_id.
    Hello = 0x0001,
    /// HMAC over the authentication transcript.
    AuthResponse = 0x0002,
    /// Verdict on the peer's AuthResponse.
    AuthResult = 0x0003,
    /// The sender's parameters, sent once both sides are authenticated.
    Login = 0x0010,
    /// The peer's Login was accepted.
    LoginAck = 0x0011,
    /// The peer's Login was refused; says which parameter and both values.
    LoginReject = 0x0012,
    /// Liveness probe.
    Heartbeat = 0x0020,
    /// Answer to a heartbeat.
    HeartbeatAck = 0x0021,
    /// The sender is closing the link.
    Bye = 0x0030,
    /// A LUN as the sender has it (inventory sync).
    LunState = 0x0100,
    /// The sender no longer has a LUN.
    LunGone = 0x0101,
    /// Start of a persistent-reservation snapshot of one LUN.
    PrBegin = 0x0110,
    /// One registration of that snapshot.
    PrReg = 0x0111,
    /// End of the snapshot.
    PrEnd = 0x0112,
    /// A PERSISTENT RESERVE OUT for the primary to execute.
    PrOut = 0x0114,
    /// The primary's answer to a PrOut.
    PrOutDone = 0x0115,
    /// A unit attention for one I_T nexus of the receiver.
    UaNexus = 0x0116,
    /// A unit attention for every I_T nexus of a LUN on the receiver.
    UaAll = 0x0117,
    /// A LUN's changeable mode parameters.
    ModePages = 0x0118,
    /// Abort the commands of one I_T nexus (PREEMPT AND ABORT).
    AbortNexus = 0x0119,
    /// The aborted commands have ended.
    AbortDone = 0x011A,
    /// Abort every command of a LUN (LOGICAL UNIT RESET).
    AbortLun = 0x011B,
    /// Block IO for the primary to do (proxy mode).
    IoReq = 0x0120,
    /// Data of an IoReq (write) or of its answer (read).
    IoData = 0x0121,
    /// The end of an IoReq.
    IoDone = 0x0122,
    /// The command of an IoReq was aborted (ABORT TASK, LUN RESET).
    IoAbort = 0x0123,
    /// Leave to run one block IO on shared storage (serialize-only mode).
    OrderReq = 0x0130,
    /// The primary's answer to an OrderReq.
    OrderGrant = 0x0131,
    /// The IO of a granted OrderReq has completed.
    OrderDone = 0x0132,
}

impl MsgType {
    /// The type with number `v`, or `None` if this version defines none.
    pub(crate) fn from_u16(v: u16) -> Option<MsgType> {
        Some(match v {
            0x0001 => MsgType::Hello,
            0x0002 => MsgType::AuthResponse,
            0x0003 => MsgType::AuthResult,
            0x0010 => MsgType::Login,
            0x0011 => MsgType::LoginAck,
            0x0012 => MsgType::LoginReject,
            0x0020 => MsgType::Heartbeat,
            0x0021 => MsgType::HeartbeatAck,
            0x0030 => MsgType::Bye,
            0x0100 => MsgType::LunState,
            0x0101 => MsgType::LunGone,
            0x0110 => MsgType::PrBegin,
            0x0111 => MsgType::PrReg,
            0x0112 => MsgType::PrEnd,
            0x0114 => MsgType::PrOut,
            0x0115 => MsgType::PrOutDone,
            0x0116 => MsgType::UaNexus,
            0x0117 => MsgType::UaAll,
            0x0118 => MsgType::ModePages,
            0x0119 => MsgType::AbortNexus,
            0x011A => MsgType::AbortDone,
            0x011B => MsgType::AbortLun,
            0x0120 => MsgType::IoReq,
            0x0121 => MsgType::IoData,
            0x0122 => MsgType::IoDone,
            0x0123 => MsgType::IoAbort,
            0x0130 => MsgType::OrderReq,
            0x0131 => MsgType::OrderGrant,
            0x0132 => MsgType::OrderDone,
            _ => return None,
        })
    }

    /// The type number.
    pub(crate) fn as_u16(self) -> u16 {
        self as u16
    }

    /// Name used in log messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MsgType::Hello => "Hello",
            MsgType::AuthResponse => "AuthResponse",
            MsgType::AuthResult => "AuthResult",
            MsgType::Login => "Login",
            MsgType::LoginAck => "LoginAck",
            MsgType::LoginReject => "LoginReject",
            MsgType::Heartbeat => "Heartbeat",
            MsgType::HeartbeatAck => "HeartbeatAck",
            MsgType::Bye => "Bye",
            MsgType::LunState => "LunState",
            MsgType::LunGone => "LunGone",
            MsgType::PrBegin => "PrBegin",
            MsgType::PrReg => "PrReg",
            MsgType::PrEnd => "PrEnd",
            MsgType::PrOut => "PrOut",
            MsgType::PrOutDone => "PrOutDone",
            MsgType::UaNexus => "UaNexus",
            MsgType::UaAll => "UaAll",
            MsgType::ModePages => "ModePages",
            MsgType::AbortNexus => "AbortNexus",
            MsgType::AbortDone => "AbortDone",
            MsgType::AbortLun => "AbortLun",
            MsgType::IoReq => "IoReq",
            MsgType::IoData => "IoData",
            MsgType::IoDone => "IoDone",
            MsgType::IoAbort => "IoAbort",
            MsgType::OrderReq => "OrderReq",
            MsgType::OrderGrant => "OrderGrant",
            MsgType::OrderDone => "OrderDone",
        }
    }

    /// Smallest and largest valid payload length of this type.
    pub(crate) fn payload_bounds(self) -> (usize, usize) {
        let len = match self {
            MsgType::Hello => HELLO_LEN,
            MsgType::AuthResponse => AUTH_RESPONSE_LEN,
            MsgType::AuthResult => AUTH_RESULT_LEN,
            MsgType::Login => LOGIN_LEN,
            MsgType::LoginAck => 0,
            MsgType::LoginReject => LOGIN_REJECT_LEN,
            MsgType::Heartbeat | MsgType::HeartbeatAck => HEARTBEAT_LEN,
            MsgType::Bye => BYE_LEN,
            MsgType::LunState => LUN_STATE_LEN,
            MsgType::LunGone => LUN_GONE_LEN,
            MsgType::PrBegin => PR_BEGIN_LEN,
            MsgType::PrReg => PR_REG_LEN,
            MsgType::PrEnd => PR_END_LEN,
            MsgType::PrOut => PR_OUT_LEN,
            MsgType::PrOutDone => PR_OUT_DONE_LEN,
            MsgType::UaNexus => UA_NEXUS_LEN,
            MsgType::UaAll => UA_ALL_LEN,
            MsgType::ModePages => MODE_PAGES_LEN,
            MsgType::AbortNexus => ABORT_NEXUS_LEN,
            MsgType::AbortDone => ABORT_DONE_LEN,
            MsgType::AbortLun => ABORT_LUN_LEN,
            MsgType::IoReq => IO_REQ_LEN,
            MsgType::IoData => return (IO_DATA_HEAD + 1, IO_DATA_HEAD + IO_CHUNK),
            MsgType::IoDone => IO_DONE_LEN,
            MsgType::IoAbort => IO_ABORT_LEN,
            MsgType::OrderReq => ORDER_REQ_LEN,
            MsgType::OrderGrant => ORDER_GRANT_LEN,
            MsgType::OrderDone => ORDER_DONE_LEN,
        };
        (len, len)
    }

    /// Checks a payload length against [`MsgType::payload_bounds`].
    pub(crate) fn check_len(self, len: usize) -> Result<(), WireError> {
        let (min, max) = self.payload_bounds();
        if len < min {
            Err(WireError::PayloadTooShort {
                msg: self,
                len,
                min,
            })
        } else if len > max {
            Err(WireError::TrailingPayload {
                msg: self,
                len,
                max,
            })
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Authentication challenge, sent by both nodes as soon as TCP is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// Fresh random nonce of the sender, new for every connection.
    pub(crate) nonce: [u8; NONCE_LEN],
    /// The sender's ha_id (bound into the MAC transcript, checked at login).
    pub(crate) ha_id: u8,
}

/// Proof of key possession: HMAC-SHA256 over the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AuthResponse {
    /// The tag.
    pub(crate) mac: [u8; MAC_LEN],
}

/// Verdict on the peer's [`AuthResponse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthResult {
    /// The response matched: the peer holds the key.
    Ok,
    /// The response did not match.
    Failed,
}

impl AuthResult {
    /// Wire code.
    fn code(self) -> u8 {
        match self {
            AuthResult::Ok => 1,
            AuthResult::Failed => 2,
        }
    }
}

/// A node's parameters, exchanged after authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Login {
    /// Protocol version; must equal the peer's.
    pub(crate) version: u16,
    /// HA mode (0 Active/Standby, 1 serialize-only, 2 proxy); must be equal.
    pub(crate) ha_mode: u8,
    /// Node position, 1 or 2; must differ between the nodes.
    pub(crate) ha_id: u8,
    /// Largest frame payload the sender accepts; the link uses the minimum.
    pub(crate) max_payload: u32,
    /// Largest number of forwarded commands in flight; the link uses the minimum.
    pub(crate) max_inflight: u32,
    /// Size of the LUN id space; must be equal.
    pub(crate) max_luns: u32,
    /// Size of the target port space; must be equal.
    pub(crate) max_ports: u32,
    /// Initiators per port; must be equal.
    pub(crate) max_inits_per_port: u32,
    /// Feature bits: the high 32 must be equal, the low 32 are intersected.
    pub(crate) features: u64,
    /// Opaque identity of the node; must differ (detects a node talking to itself).
    pub(crate) node_id: u64,
}

/// Which login parameter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RejectReason {
    /// Protocol versions differ.
    Version,
    /// ha_mode values differ.
    HaMode,
    /// Both nodes have the same ha_id.
    HaIdConflict,
    /// The peer's ha_id is not 1 or 2.
    HaIdInvalid,
    /// The ha_id in the Login differs from the one in the Hello.
    HaIdChanged,
    /// Both nodes have the same node identity.
    NodeIdConflict,
    /// The mandatory (high 32) feature bits differ.
    MandatoryFeatures,
    /// max_luns values differ.
    MaxLuns,
    /// max_ports values differ.
    MaxPorts,
    /// max_inits_per_port values differ.
    MaxInitsPerPort,
    /// max_payload is below the minimum.
    MaxPayload,
    /// max_inflight is zero.
    MaxInflight,
    /// A reason this version does not know (a newer peer).
    Other(u16),
}

impl RejectReason {
    /// Wire code.
    pub(crate) fn code(self) -> u16 {
        match self {
            RejectReason::Version => 1,
            RejectReason::HaMode => 2,
            RejectReason::HaIdConflict => 3,
            RejectReason::HaIdInvalid => 4,
            RejectReason::HaIdChanged => 5,
            RejectReason::NodeIdConflict => 6,
            RejectReason::MandatoryFeatures => 7,
            RejectReason::MaxLuns => 8,
            RejectReason::MaxPorts => 9,
            RejectReason::MaxInitsPerPort => 10,
            RejectReason::MaxPayload => 11,
            RejectReason::MaxInflight => 12,
            RejectReason::Other(c) => c,
        }
    }

    /// The reason with wire code `c`; `None` for the invalid code 0.
    pub(crate) fn from_code(c: u16) -> Option<RejectReason> {
        Some(match c {
            0 => return None,
            1 => RejectReason::Version,
            2 => RejectReason::HaMode,
            3 => RejectReason::HaIdConflict,
            4 => RejectReason::HaIdInvalid,
            5 => RejectReason::HaIdChanged,
            6 => RejectReason::NodeIdConflict,
            7 => RejectReason::MandatoryFeatures,
            8 => RejectReason::MaxLuns,
            9 => RejectReason::MaxPorts,
            10 => RejectReason::MaxInitsPerPort,
            11 => RejectReason::MaxPayload,
            12 => RejectReason::MaxInflight,
            c => RejectReason::Other(c),
        })
    }
}

/// Refusal of the peer's [`Login`], naming the parameter and both values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoginReject {
    /// The parameter.
    pub(crate) reason: RejectReason,
    /// The value on the node sending this reject.
    pub(crate) sender_value: u64,
    /// The value the receiver of this reject announced.
    pub(crate) receiver_value: u64,
}

/// Why a node closes the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByeReason {
    /// Module unload or system shutdown.
    Shutdown,
    /// A node setting changed (ha_peer, ha_id, ha_mode, ha_key).
    ConfigChanged,
    /// A malformed or unexpected frame was received.
    ProtocolError,
    /// Authentication failed.
    AuthFailed,
    /// A login parameter was refused.
    LoginRejected,
    /// The peer did not answer in time.
    Timeout,
    /// A reason this version does not know (a newer peer).
    Other(u16),
}

impl ByeReason {
    /// Wire code.
    pub(crate) fn code(self) -> u16 {
        match self {
            ByeReason::Shutdown => 1,
            ByeReason::ConfigChanged => 2,
            ByeReason::ProtocolError => 3,
            ByeReason::AuthFailed => 4,
            ByeReason::LoginRejected => 5,
            ByeReason::Timeout => 6,
            ByeReason::Other(c) => c,
        }
    }

    /// The reason with wire code `c`; `None` for the invalid code 0.
    pub(crate) fn from_code(c: u16) -> Option<ByeReason> {
        Some(match c {
            0 => return None,
            1 => ByeReason::Shutdown,
            2 => ByeReason::ConfigChanged,
            3 => ByeReason::ProtocolError,
            4 => ByeReason::AuthFailed,
            5 => ByeReason::LoginRejected,
            6 => ByeReason::Timeout,
            c => ByeReason::Other(c),
        })
    }
}

impl fmt::Display for ByeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ByeReason::Shutdown => f.write_str("shutdown"),
            ByeReason::ConfigChanged => f.write_str("configuration changed"),
            ByeReason::ProtocolError => f.write_str("protocol error"),
            ByeReason::AuthFailed => f.write_str("authentication failed"),
            ByeReason::LoginRejected => f.write_str("login rejected"),
            ByeReason::Timeout => f.write_str("timeout"),
            ByeReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

/// A LUN's role on the sending node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LunRole {
    /// The sender is primary for the LUN.
    Primary = 1,
    /// The sender is secondary.
    Secondary = 2,
}

/// A LUN as the sending node has it: identity, role, geometry and the
/// relative target port ids it is exported through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LunState {
    /// HA identity of the LUN, the same on both nodes (`lun_id=`).
    pub(crate) lun_id: u32,
    /// The sender's role for it.
    pub(crate) role: LunRole,
    /// Logical block size in bytes.
    pub(crate) block_size: u32,
    /// Capacity in logical blocks.
    pub(crate) blocks: u64,
    /// Unit serial number (VPD 0x80), NUL-padded.
    pub(crate) serial: [u8; SERIAL_LEN],
    /// How many of `ports` are valid.
    pub(crate) nports: u8,
    /// Relative target port ids of the sender's ports exporting the LUN.
    pub(crate) ports: [u16; MAX_LUN_PORTS],
}

impl LunState {
    /// The valid port ids.
    pub(crate) fn ports(&self) -> &[u16] {
        self.ports.get(..usize::from(self.nports)).unwrap_or(&[])
    }

    /// The serial without its NUL padding.
    pub(crate) fn serial(&self) -> &[u8] {
        let end = self.serial.iter().position(|&b| b == 0).unwrap_or(SERIAL_LEN);
        self.serial.get(..end).unwrap_or(&[])
    }
}

/// Start of a persistent-reservation snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrBegin {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The sender's snapshot number; the same in every part.
    pub(crate) snapshot: u32,
    /// PRgeneration.
    pub(crate) generation: u32,
    /// How many [`PrReg`] follow (≤ [`PR_MAX_REGS`]).
    pub(crate) count: u16,
    /// Reservation type code (SPC), 0 when there is no reservation.
    pub(crate) res_type: u8,
    /// Index of the holder's registration; `None` without a reservation or
    /// for All Registrants types.
    pub(crate) holder: Option<u16>,
}

/// An initiator port as the wire names it: SCSI protocol identifier,
/// name and ISID text (iSCSI; empty for other fabrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortName {
    /// SCSI protocol identifier (≤ 0x0F).
    pub(crate) proto: u8,
    isid_len: u8,
    name_len: u16,
    isid: [u8; PR_ISID_LEN],
    name: [u8; PR_NAME_LEN + 1],
}

impl PortName {
    /// `None` if the name is empty or too long, the ISID too long or the
    /// protocol identifier out of range.
    pub(crate) fn new(proto: u8, name: &[u8], isid: &[u8]) -> Option<PortName> {
        if name.is_empty() || name.len() > PR_NAME_LEN || isid.len() > PR_ISID_LEN || proto > 0x0F {
            return None;
        }
        let mut p = PortName {
            proto,
            isid_len: u8::try_from(isid.len()).ok()?,
            name_len: u16::try_from(name.len()).ok()?,
            isid: [0; PR_ISID_LEN],
            name: [0; PR_NAME_LEN + 1],
        };
        p.isid.get_mut(..isid.len())?.copy_from_slice(isid);
        p.name.get_mut(..name.len())?.copy_from_slice(name);
        Some(p)
    }

    /// The initiator port name.
    pub(crate) fn name(&self) -> &[u8] {
        self.name.get(..usize::from(self.name_len)).unwrap_or(&[])
    }

    /// The ISID text.
    pub(crate) fn isid(&self) -> &[u8] {
        self.isid.get(..usize::from(self.isid_len)).unwrap_or(&[])
    }

    /// Reads and checks one: protocol id `u8`, ISID length `u8`, name
    /// length `u16`, ISID `[u8; 16]`, name `[u8; 224]`, padding zero.
    fn read(r: &mut Reader<'_>, msg: MsgType) -> Option<Result<PortName, WireError>> {
        let invalid = |field, value| WireError::InvalidField { msg, field, value };
        let proto = r.u8()?;
        let isid_len = r.u8()?;
        let name_len = r.u16()?;
        let isid: [u8; PR_ISID_LEN] = r.array()?;
        let name: [u8; PR_NAME_LEN + 1] = r.array()?;
        if proto > 0x0F {
            return Some(Err(invalid("protocol id", u64::from(proto))));
        }
        if usize::from(isid_len) > PR_ISID_LEN {
            return Some(Err(invalid("ISID length", u64::from(isid_len))));
        }
        if name_len == 0 || usize::from(name_len) > PR_NAME_LEN {
            return Some(Err(invalid("name length", u64::from(name_len))));
        }
        // Padding must be zero: one encoding per initiator port.
        let pad_isid = isid.get(usize::from(isid_len)..).unwrap_or(&[]);
        let pad_name = name.get(usize::from(name_len)..).unwrap_or(&[]);
        if pad_isid.iter().chain(pad_name).any(|&b| b != 0) {
            return Some(Err(invalid("padding", 1)));
        }
        Some(Ok(PortName { proto, isid_len, name_len, isid, name }))
    }

    fn write(&self, w: &mut Writer<'_>) -> Option<()> {
        w.u8(self.proto)?;
        w.u8(self.isid_len)?;
        w.u16(self.name_len)?;
        w.put(&self.isid)?;
        w.put(&self.name)
    }
}

/// One registration of a snapshot, naming its I_T nexus by the initiator
/// port and the relative target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrReg {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The snapshot it belongs to.
    pub(crate) snapshot: u32,
    /// Position in the snapshot, from 0.
    pub(crate) index: u16,
    /// Relative target port id of the nexus.
    pub(crate) rel_port: u16,
    /// Reservation key (never 0).
    pub(crate) key: u64,
    /// The initiator port.
    pub(crate) port: PortName,
}

impl PrReg {
    /// A registration record; `None` if the key is 0 or the port cannot
    /// be named (see [`PortName::new`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        lun_id: u32,
        snapshot: u32,
        index: u16,
        rel_port: u16,
        key: u64,
        proto: u8,
        name: &[u8],
        isid: &[u8],
    ) -> Option<PrReg> {
        if key == 0 {
            return None;
        }
        Some(PrReg { lun_id, snapshot, index, rel_port, key, port: PortName::new(proto, name, isid)? })
    }

    /// The initiator port name.
    pub(crate) fn name(&self) -> &[u8] {
        self.port.name()
    }

    /// The ISID text.
    pub(crate) fn isid(&self) -> &[u8] {
        self.port.isid()
    }
}

/// A PERSISTENT RESERVE OUT forwarded to the LUN's primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrOut {
    /// The sender's handle for the answer.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// Relative target port of the I_T nexus.
    pub(crate) rel_port: u16,
    /// Service action code (0..=6).
    pub(crate) action: u8,
    /// Reservation type code, 0 when the action takes none.
    pub(crate) res_type: u8,
    /// RESERVATION KEY.
    pub(crate) key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub(crate) sa_key: u64,
    /// The initiator port of the I_T nexus.
    pub(crate) port: PortName,
}

/// The primary's answer to a [`PrOut`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrOutDone {
    /// The PrOut's tag.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// SCSI status: 0 GOOD, 0x02 CHECK CONDITION, 0x18 RESERVATION CONFLICT.
    pub(crate) status: u8,
    /// Sense key, ASC and ASCQ of a CHECK CONDITION.
    pub(crate) sense: [u8; 3],
}

/// A unit attention for one I_T nexus of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UaNexus {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// Relative target port of the I_T nexus.
    pub(crate) rel_port: u16,
    /// Additional sense code and qualifier (sense key UNIT ATTENTION).
    pub(crate) asc: [u8; 2],
    /// The initiator port of the I_T nexus.
    pub(crate) port: PortName,
}

/// PREEMPT AND ABORT for one I_T nexus of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortNexus {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The sender's number for this abort, echoed by [`AbortDone`];
    /// increasing per LUN.
    pub(crate) token: u32,
    /// Relative target port of the I_T nexus.
    pub(crate) rel_port: u16,
    /// The initiator port of the I_T nexus.
    pub(crate) port: PortName,
}

/// The commands of every [`AbortNexus`] up to `token` have ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortDone {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The highest token answered.
    pub(crate) token: u32,
}

/// LOGICAL UNIT RESET on the sender: every command of the LUN on the
/// receiver is aborted; answered by [`AbortDone`] with `token` once they
/// have ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortLun {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The sender's number for this abort (shared with [`AbortNexus`]).
    pub(crate) token: u32,
}

/// A LUN's changeable mode parameters, as one node holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModePages {
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// Bumped by every MODE SELECT that changed them (0: as configured).
    pub(crate) generation: u32,
    /// The caching page's WCE: the write cache is enabled.
    pub(crate) wce: bool,
}

/// What an [`IoReq`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoOp {
    /// Read `len` bytes; they come back as IoData.
    Read = 1,
    /// Write the `len` bytes that follow as IoData.
    Write = 2,
    /// Flush the device's volatile cache.
    Flush = 3,
    /// Deallocate (discard) `len` sectors: UNMAP, WRITE SAME with UNMAP.
    Discard = 4,
    /// Write zeroes to `len` sectors, keeping them allocated: WRITE SAME of
    /// a zero block.
    WriteZeroes = 5,
    /// Write the one logical block that follows as IoData to each block of
    /// `len` sectors: WRITE SAME.
    WriteSame = 6,
    /// Compare the `len` bytes at the sector with the first `len` bytes
    /// that follow as IoData and, if equal, write the next `len` bytes
    /// there, atomically against other compare and writes: COMPARE AND
    /// WRITE.
    CompareAndWrite = 7,
}

impl IoOp {
    /// Whether `len` of an IoReq with this op counts 512-byte sectors (a
    /// range the op covers) rather than data bytes.
    pub(crate) fn len_is_sectors(self) -> bool {
        matches!(self, IoOp::Discard | IoOp::WriteZeroes | IoOp::WriteSame)
    }
}

/// Block IO the secondary asks the primary to do (proxy mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoReq {
    /// Chosen by the sender, unique among its IoReqs in flight.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The operation.
    pub(crate) op: IoOp,
    /// Forced unit access (writes).
    pub(crate) fua: bool,
    /// The IO of an ORDERED task (reads and writes): the primary runs it
    /// after every IO it had started and before any it receives or starts
    /// later.
    pub(crate) ordered: bool,
    /// The IO of a HEAD OF QUEUE task (reads and writes): the primary runs
    /// it at once, even while an ORDERED task's IO runs.
    pub(crate) head: bool,
    /// First 512-byte sector.
    pub(crate) sector: u64,
    /// Bytes to move (read, write; 0 for a flush), or sectors in the range
    /// ([`IoOp::len_is_sectors`]).
    pub(crate) len: u32,
}

impl IoReq {
    /// Bytes of IoData that follow this request (write data).
    pub(crate) fn data_len(&self) -> usize {
        let len = self.len as usize;
        match self.op {
            IoOp::Write => len,
            IoOp::CompareAndWrite => len.saturating_mul(2),
            IoOp::Read | IoOp::Flush | IoOp::Discard | IoOp::WriteZeroes | IoOp::WriteSame => 0,
        }
    }

    /// 512-byte sectors the IO covers.
    pub(crate) fn sectors(&self) -> u64 {
        if self.op.len_is_sectors() {
            u64::from(self.len)
        } else {
            u64::from(self.len / 512)
        }
    }
}

/// The fields of an IoData frame; its data is the rest of the payload
/// ([`IoData::data_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoData {
    /// The IoReq's tag.
    pub(crate) tag: u32,
    /// Where the data goes in the IO.
    pub(crate) offset: u32,
    /// How many data bytes follow.
    pub(crate) len: u32,
}

impl IoData {
    /// The data bytes of an IoData frame's `payload`.
    pub(crate) fn data_of(payload: &[u8]) -> &[u8] {
        payload.get(IO_DATA_HEAD..).unwrap_or(&[])
    }
}

/// How an [`IoReq`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoStatus {
    /// Done.
    Ok,
    /// The block layer's error status (1..=63).
    Blk(u8),
    /// The primary does not hold the LUN's backing device (any more).
    NotHeld,
    /// The primary had no resources for it now.
    Busy,
    /// Compare and write: the data differ, first at this byte offset
    /// (< [`MAX_CAW_BYTES`]); nothing was written.
    Miscompare(u32),
    /// An [`IoAbort`] reached it before it ran: nothing was done.
    Aborted,
}

impl IoStatus {
    fn code(self) -> u8 {
        match self {
            IoStatus::Ok => 0,
            IoStatus::Blk(v) => v,
            IoStatus::NotHeld => 0x80,
            IoStatus::Busy => 0x81,
            IoStatus::Miscompare(_) => 0x82,
            IoStatus::Aborted => 0x83,
        }
    }

    /// The three bytes after the code: a miscompare's offset, else 0.
    fn detail(self) -> [u8; 3] {
        match self {
            IoStatus::Miscompare(off) => {
                let b = off.to_le_bytes();
                [b[0], b[1], b[2]]
            }
            _ => [0; 3],
        }
    }

    fn from_code(c: u8, detail: [u8; 3]) -> Result<IoStatus, &'static str> {
        let st = match c {
            0 => IoStatus::Ok,
            1..=63 => IoStatus::Blk(c),
            0x80 => IoStatus::NotHeld,
            0x81 => IoStatus::Busy,
            0x83 => IoStatus::Aborted,
            0x82 => {
                let off = u32::from_le_bytes([detail[0], detail[1], detail[2], 0]);
                if off >= MAX_CAW_BYTES {
                    return Err("offset");
                }
                return Ok(IoStatus::Miscompare(off));
            }
            _ => return Err("status"),
        };
        if detail != [0; 3] {
            return Err("reserved");
        }
        Ok(st)
    }
}

/// The primary's answer to an [`IoReq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoDone {
    /// The IoReq's tag.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The outcome.
    pub(crate) status: IoStatus,
}

/// The command of the sender's [`IoReq`] `tag` was aborted (ABORT TASK,
/// LUN RESET): if its IO has not started on the receiver (it waits behind
/// an ORDERED task or for the COMPARE AND WRITE lock), it is dropped and
/// answered [`IoStatus::Aborted`]; otherwise its [`IoDone`] comes as it
/// would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoAbort {
    /// The IoReq's tag.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
}

/// Leave the secondary asks of the primary to run one block IO on the
/// shared backing device (serialize-only mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderReq {
    /// Chosen by the sender, unique among its OrderReqs in flight (bit 31
    /// clear).
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The IO writes (else it reads; always set with `all`).
    pub(crate) write: bool,
    /// An ORDERED task's IO: ordered as a write over the whole LUN
    /// (`sector` and `sectors` are 0).
    pub(crate) all: bool,
    /// First 512-byte sector.
    pub(crate) sector: u64,
    /// 512-byte sectors in the range (1..=[`MAX_ORDER_SECTORS`]).
    pub(crate) sectors: u32,
}

impl OrderReq {
    /// The sector after the range (saturating; a decoded request's range
    /// ends within the sector space); the whole sector space for `all`.
    pub(crate) fn end(&self) -> u64 {
        if self.all {
            return u64::MAX;
        }
        self.sector.saturating_add(u64::from(self.sectors))
    }
}

/// The primary's answer to an [`OrderReq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    /// Run the IO now; send [`OrderDone`] when it has completed.
    Go,
    /// The receiver is not the LUN's primary.
    NotHeld,
    /// The primary has too many orders waiting.
    Busy,
}

impl OrderStatus {
    /// Wire code.
    fn code(self) -> u8 {
        match self {
            OrderStatus::Go => 0,
            OrderStatus::NotHeld => 0x80,
            OrderStatus::Busy => 0x81,
        }
    }

    /// The status with wire code `c`; `None` for any other code.
    fn from_code(c: u8) -> Option<OrderStatus> {
        Some(match c {
            0 => OrderStatus::Go,
            0x80 => OrderStatus::NotHeld,
            0x81 => OrderStatus::Busy,
            _ => return None,
        })
    }
}

/// The primary's answer to an [`OrderReq`]; any status but
/// [`OrderStatus::Go`] ends the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderGrant {
    /// The OrderReq's tag.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
    /// The answer.
    pub(crate) status: OrderStatus,
}

/// The secondary's word that the IO of a granted [`OrderReq`] has
/// completed: the primary may run its own overlapping IO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderDone {
    /// The OrderReq's tag.
    pub(crate) tag: u32,
    /// The LUN (HA identity).
    pub(crate) lun_id: u32,
}

/// One decoded message.
///
/// All current payloads are fixed-size, so a message owns its fields; later
/// variable-length messages will borrow from the received payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`AuthResponse`].
    AuthResponse(AuthResponse),
    /// See [`AuthResult`].
    AuthResult(AuthResult),
    /// See [`Login`].
    Login(Login),
    /// The peer's Login was accepted.
    LoginAck,
    /// See [`LoginReject`].
    LoginReject(LoginReject),
    /// Liveness probe carrying a counter or timestamp.
    Heartbeat(u64),
    /// Answer to a heartbeat, echoing its value.
    HeartbeatAck(u64),
    /// The sender closes the link.
    Bye(ByeReason),
    /// See [`LunState`].
    LunState(LunState),
    /// The sender no longer has LUN `lun_id`.
    LunGone(u32),
    /// See [`PrBegin`].
    PrBegin(PrBegin),
    /// See [`PrReg`].
    PrReg(PrReg),
    /// End of snapshot `.1` of LUN `.0`.
    PrEnd(u32, u32),
    /// See [`PrOut`].
    PrOut(PrOut),
    /// See [`PrOutDone`].
    PrOutDone(PrOutDone),
    /// See [`UaNexus`].
    UaNexus(UaNexus),
    /// A unit attention (ASC, ASCQ `.1`) for every I_T nexus of LUN `.0`.
    UaAll(u32, [u8; 2]),
    /// See [`ModePages`].
    ModePages(ModePages),
    /// See [`AbortNexus`].
    AbortNexus(AbortNexus),
    /// See [`AbortDone`].
    AbortDone(AbortDone),
    /// See [`AbortLun`].
    AbortLun(AbortLun),
    /// See [`IoReq`].
    IoReq(IoReq),
    /// See [`IoData`]: only the fields before the data (the data stays in
    /// the received frame; a sender writes it after
    /// [`super::frame::encode_data_head`], then the frame's trailer).
    IoData(IoData),
    /// See [`IoDone`].
    IoDone(IoDone),
    /// See [`IoAbort`].
    IoAbort(IoAbort),
    /// See [`OrderReq`].
    OrderReq(OrderReq),
    /// See [`OrderGrant`].
    OrderGrant(OrderGrant),
    /// See [`OrderDone`].
    OrderDone(OrderDone),
}

impl Message {
    /// The type number this message is sent with.
    pub(crate) fn msg_type(&self) -> MsgType {
        match self {
            Message::Hello(_) => MsgType::Hello,
            Message::AuthResponse(_) => MsgType::AuthResponse,
            Message::AuthResult(_) => MsgType::AuthResult,
            Message::Login(_) => MsgType::Login,
            Message::LoginAck => MsgType::LoginAck,
            Message::LoginReject(_) => MsgType::LoginReject,
            Message::Heartbeat(_) => MsgType::Heartbeat,
            Message::HeartbeatAck(_) => MsgType::HeartbeatAck,
            Message::Bye(_) => MsgType::Bye,
            Message::LunState(_) => MsgType::LunState,
            Message::LunGone(_) => MsgType::LunGone,
            Message::PrBegin(_) => MsgType::PrBegin,
            Message::PrReg(_) => MsgType::PrReg,
            Message::PrEnd(..) => MsgType::PrEnd,
            Message::PrOut(_) => MsgType::PrOut,
            Message::PrOutDone(_) => MsgType::PrOutDone,
            Message::UaNexus(_) => MsgType::UaNexus,
            Message::UaAll(..) => MsgType::UaAll,
            Message::ModePages(_) => MsgType::ModePages,
            Message::AbortNexus(_) => MsgType::AbortNexus,
            Message::AbortDone(_) => MsgType::AbortDone,
            Message::AbortLun(_) => MsgType::AbortLun,
            Message::IoReq(_) => MsgType::IoReq,
            Message::IoData(_) => MsgType::IoData,
            Message::IoDone(_) => MsgType::IoDone,
            Message::IoAbort(_) => MsgType::IoAbort,
            Message::OrderReq(_) => MsgType::OrderReq,
            Message::OrderGrant(_) => MsgType::OrderGrant,
            Message::OrderDone(_) => MsgType::OrderDone,
        }
    }

    /// Length of the encoded payload.
    /// For IoData, the fields only: its data is sent after them (see
    /// [`encode_data_head`]).
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Message::IoData(_) => IO_DATA_HEAD,
            // Every other type has a fixed length.
            m => m.msg_type().payload_bounds().0,
        }
    }

    /// Decodes the payload of a message of type `ty`.
    ///
    /// `payload` must be exactly the payload (not the header); a shorter or
    /// longer one is rejected.
    // Not inlined: its temporaries need not stay on the stack while the
    // decoded message is handled (the interlink thread's stack is small).
    #[inline(never)]
    pub(crate) fn decode(ty: MsgType, payload: &[u8]) -> Result<Message, WireError> {
        ty.check_len(payload.len())?;
        let short = WireError::PayloadTooShort {
            msg: ty,
            len: payload.len(),
            min: ty.payload_bounds().0,
        };
        let mut r = Reader::new(payload);
        let msg = Self::decode_fields(ty, &mut r)
            .ok_or(short)
            .and_then(|m| m)?;
        if r.remaining() != 0 {
            return Err(WireError::TrailingPayload {
                msg: ty,
                len: payload.len(),
                max: ty.payload_bounds().1,
            });
        }
        Ok(msg)
    }

    /// Reads the fields of a `ty` payload; `None` if the payload runs out.
    fn decode_fields(ty: MsgType, r: &mut Reader<'_>) -> Option<Result<Message, WireError>> {
        let invalid = |field, value| WireError::InvalidField {
            msg: ty,
            field,
            value,
        };
        let msg = match ty {
            MsgType::Hello => Message::Hello(Hello {
                nonce: r.array()?,
                ha_id: r.u8()?,
            }),
            MsgType::AuthResponse => Message::AuthResponse(AuthResponse { mac: r.array()? }),
            MsgType::AuthResult => match r.u8()? {
                1 => Message::AuthResult(AuthResult::Ok),
                2 => Message::AuthResult(AuthResult::Failed),
                v => return Some(Err(invalid("result", u64::from(v)))),
            },
            MsgType::Login => Message::Login(Login {
                version: r.u16()?,
                ha_mode: r.u8()?,
                ha_id: r.u8()?,
                max_payload: r.u32()?,
                max_inflight: r.u32()?,
                max_luns: r.u32()?,
                max_ports: r.u32()?,
                max_inits_per_port: r.u32()?,
                features: r.u64()?,
                node_id: r.u64()?,
            }),
            MsgType::LoginAck => Message::LoginAck,
            MsgType::LoginReject => {
                let code = r.u16()?;
                let Some(reason) = RejectReason::from_code(code) else {
                    return Some(Err(invalid("reason", u64::from(code))));
                };
                Message::LoginReject(LoginReject {
                    reason,
                    sender_value: r.u64()?,
                    receiver_value: r.u64()?,
                })
            }
            MsgType::Heartbeat => Message::Heartbeat(r.u64()?),
            MsgType::HeartbeatAck => Message::HeartbeatAck(r.u64()?),
            MsgType::Bye => {
                let code = r.u16()?;
                match ByeReason::from_code(code) {
                    Some(reason) => Message::Bye(reason),
                    None => return Some(Err(invalid("reason", u64::from(code)))),
                }
            }
            MsgType::LunState => {
                let lun_id = r.u32()?;
                let role = match r.u8()? {
                    1 => LunRole::Primary,
                    2 => LunRole::Secondary,
                    v => return Some(Err(invalid("role", u64::from(v)))),
                };
                let nports = r.u8()?;
                if usize::from(nports) > MAX_LUN_PORTS {
                    return Some(Err(invalid("port count", u64::from(nports))));
                }
                let reserved = r.u16()?;
                if reserved != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved))));
                }
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let block_size = r.u32()?;
                if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
                    return Some(Err(invalid("block_size", u64::from(block_size))));
                }
                let blocks = r.u64()?;
                let serial = r.array()?;
                let mut ports = [0u16; MAX_LUN_PORTS];
                for p in ports.iter_mut() {
                    *p = r.u16()?;
                }
                Message::LunState(LunState { lun_id, role, block_size, blocks, serial, nports, ports })
            }
            MsgType::LunGone => {
                let lun_id = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::LunGone(lun_id)
            }
            MsgType::PrBegin => {
                let lun_id = r.u32()?;
                let snapshot = r.u32()?;
                let generation = r.u32()?;
                let count = r.u16()?;
                let res_type = r.u8()?;
                let reserved = r.u8()?;
                let holder = r.u16()?;
                let reserved2 = r.u16()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if count > PR_MAX_REGS {
                    return Some(Err(invalid("registration count", u64::from(count))));
                }
                if !matches!(res_type, 0 | 1 | 3 | 5 | 6 | 7 | 8) {
                    return Some(Err(invalid("reservation type", u64::from(res_type))));
                }
                if reserved != 0 || reserved2 != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved) | u64::from(reserved2))));
                }
                let holder = match holder {
                    0xFFFF => None,
                    h if h < count && res_type != 0 => Some(h),
                    h => return Some(Err(invalid("holder index", u64::from(h)))),
                };
                Message::PrBegin(PrBegin { lun_id, snapshot, generation, count, res_type, holder })
            }
            MsgType::PrReg => {
                let lun_id = r.u32()?;
                let snapshot = r.u32()?;
                let index = r.u16()?;
                let rel_port = r.u16()?;
                let key = r.u64()?;
                let port = PortName::read(r, ty)?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if index >= PR_MAX_REGS {
                    return Some(Err(invalid("index", u64::from(index))));
                }
                if key == 0 {
                    return Some(Err(invalid("key", 0)));
                }
                let port = match port {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                Message::PrReg(PrReg { lun_id, snapshot, index, rel_port, key, port })
            }
            MsgType::PrEnd => {
                let lun_id = r.u32()?;
                let snapshot = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::PrEnd(lun_id, snapshot)
            }
            MsgType::PrOut => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let rel_port = r.u16()?;
                let action = r.u8()?;
                let res_type = r.u8()?;
                let key = r.u64()?;
                let sa_key = r.u64()?;
                let port = PortName::read(r, ty)?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if action > 6 {
                    return Some(Err(invalid("service action", u64::from(action))));
                }
                if !matches!(res_type, 0 | 1 | 3 | 5 | 6 | 7 | 8) {
                    return Some(Err(invalid("reservation type", u64::from(res_type))));
                }
                let port = match port {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                Message::PrOut(PrOut { tag, lun_id, rel_port, action, res_type, key, sa_key, port })
            }
            MsgType::PrOutDone => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let status = r.u8()?;
                let sense: [u8; 3] = r.array()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let sense_ok = if status == 0x02 { sense[0] <= 0x0F } else { sense == [0; 3] };
                if !matches!(status, 0x00 | 0x02 | 0x18) || !sense_ok {
                    return Some(Err(invalid("status", u64::from(status))));
                }
                Message::PrOutDone(PrOutDone { tag, lun_id, status, sense })
            }
            MsgType::UaNexus => {
                let lun_id = r.u32()?;
                let rel_port = r.u16()?;
                let asc: [u8; 2] = r.array()?;
                let reserved = r.u16()?;
                let port = PortName::read(r, ty)?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if reserved != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved))));
                }
                let port = match port {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                Message::UaNexus(UaNexus { lun_id, rel_port, asc, port })
            }
            MsgType::UaAll => {
                let lun_id = r.u32()?;
                let asc: [u8; 2] = r.array()?;
                let reserved = r.u16()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if reserved != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved))));
                }
                Message::UaAll(lun_id, asc)
            }
            MsgType::AbortNexus => {
                let lun_id = r.u32()?;
                let token = r.u32()?;
                let rel_port = r.u16()?;
                let reserved = r.u16()?;
                let port = PortName::read(r, ty)?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if reserved != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved))));
                }
                let port = match port {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                Message::AbortNexus(AbortNexus { lun_id, token, rel_port, port })
            }
            MsgType::AbortDone => {
                let lun_id = r.u32()?;
                let token = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::AbortDone(AbortDone { lun_id, token })
            }
            MsgType::AbortLun => {
                let lun_id = r.u32()?;
                let token = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::AbortLun(AbortLun { lun_id, token })
            }
            MsgType::ModePages => {
                let lun_id = r.u32()?;
                let generation = r.u32()?;
                let flags = r.u8()?;
                let reserved: [u8; 3] = r.array()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                if flags & !1 != 0 {
                    return Some(Err(invalid("flags", u64::from(flags))));
                }
                if reserved != [0; 3] {
                    return Some(Err(invalid("reserved", 1)));
                }
                Message::ModePages(ModePages { lun_id, generation, wce: flags & 1 != 0 })
            }
            MsgType::IoReq => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let op = r.u8()?;
                let flags = r.u8()?;
                let reserved = r.u16()?;
                let sector = r.u64()?;
                let len = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let op = match op {
                    1 => IoOp::Read,
                    2 => IoOp::Write,
                    3 => IoOp::Flush,
                    4 => IoOp::Discard,
                    5 => IoOp::WriteZeroes,
                    6 => IoOp::WriteSame,
                    7 => IoOp::CompareAndWrite,
                    v => return Some(Err(invalid("op", u64::from(v)))),
                };
                let (ordered, head) = (flags & 2 != 0, flags & 4 != 0);
                let attr_ok = !(ordered || head) || (!(ordered && head) && matches!(op, IoOp::Read | IoOp::Write));
                if flags & !7 != 0 || !attr_ok {
                    return Some(Err(invalid("flags", u64::from(flags))));
                }
                if reserved != 0 {
                    return Some(Err(invalid("reserved", u64::from(reserved))));
                }
                let len_ok = match op {
                    IoOp::Flush => len == 0,
                    IoOp::Read | IoOp::Write => len > 0 && len <= MAX_IO_BYTES && len % 512 == 0,
                    IoOp::Discard | IoOp::WriteZeroes | IoOp::WriteSame => len > 0,
                    IoOp::CompareAndWrite => len > 0 && len <= MAX_CAW_BYTES && len % 512 == 0,
                };
                if !len_ok {
                    return Some(Err(invalid("length", u64::from(len))));
                }
                let q = IoReq { tag, lun_id, op, fua: flags & 1 != 0, ordered, head, sector, len };
                if sector.checked_add(q.sectors()).is_none_or(|end| end > MAX_SECTOR) {
                    return Some(Err(invalid("sector", sector)));
                }
                Message::IoReq(q)
            }
            MsgType::IoData => {
                let tag = r.u32()?;
                let offset = r.u32()?;
                let data = r.take(r.remaining())?;
                // Bounded by the payload bounds (≤ IO_CHUNK).
                let len = u32::try_from(data.len()).ok()?;
                if offset.checked_add(len).is_none_or(|end| end > MAX_IO_BYTES) {
                    return Some(Err(invalid("offset", u64::from(offset))));
                }
                Message::IoData(IoData { tag, offset, len })
            }
            MsgType::IoDone => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let code = r.u8()?;
                let detail: [u8; 3] = r.array()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let status = match IoStatus::from_code(code, detail) {
                    Ok(st) => st,
                    Err("status") => return Some(Err(invalid("status", u64::from(code)))),
                    Err(field) => return Some(Err(invalid(field, u64::from(u32::from_le_bytes([detail[0], detail[1], detail[2], 0]))))),
                };
                Message::IoDone(IoDone { tag, lun_id, status })
            }
            MsgType::IoAbort => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::IoAbort(IoAbort { tag, lun_id })
            }
            MsgType::OrderReq => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let access = r.u8()?;
                let reserved: [u8; 3] = r.array()?;
                let sector = r.u64()?;
                let sectors = r.u32()?;
                if tag & 0x8000_0000 != 0 {
                    return Some(Err(invalid("tag", u64::from(tag))));
                }
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let (write, all) = match access {
                    1 => (false, false),
                    2 => (true, false),
                    3 => (true, true),
                    v => return Some(Err(invalid("access", u64::from(v)))),
                };
                if reserved != [0; 3] {
                    return Some(Err(invalid("reserved", 1)));
                }
                if all {
                    // The whole LUN: no range.
                    if sector != 0 {
                        return Some(Err(invalid("sector", sector)));
                    }
                    if sectors != 0 {
                        return Some(Err(invalid("sectors", u64::from(sectors))));
                    }
                } else {
                    if sectors == 0 || sectors > MAX_ORDER_SECTORS {
                        return Some(Err(invalid("sectors", u64::from(sectors))));
                    }
                    if sector.checked_add(u64::from(sectors)).is_none_or(|end| end > MAX_SECTOR) {
                        return Some(Err(invalid("sector", sector)));
                    }
                }
                Message::OrderReq(OrderReq { tag, lun_id, write, all, sector, sectors })
            }
            MsgType::OrderGrant => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                let code = r.u8()?;
                let reserved: [u8; 3] = r.array()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                let Some(status) = OrderStatus::from_code(code) else {
                    return Some(Err(invalid("status", u64::from(code))));
                };
                if reserved != [0; 3] {
                    return Some(Err(invalid("reserved", 1)));
                }
                Message::OrderGrant(OrderGrant { tag, lun_id, status })
            }
            MsgType::OrderDone => {
                let tag = r.u32()?;
                let lun_id = r.u32()?;
                if lun_id > MAX_LUN_ID {
                    return Some(Err(invalid("lun_id", u64::from(lun_id))));
                }
                Message::OrderDone(OrderDone { tag, lun_id })
            }
        };
        Some(Ok(msg))
    }

    /// Encodes the payload into `out`; returns its length.
    pub(crate) fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let need = self.payload_len();
        let have = out.len();
        let mut w = Writer::new(out);
        self.encode_fields(&mut w)
            .ok_or(EncodeError::BufferTooSmall { need, have })?;
        Ok(w.written())
    }

    /// Writes the payload fields; `None` if `w` runs out of space.
    fn encode_fields(&self, w: &mut Writer<'_>) -> Option<()> {
        match self {
            Message::Hello(h) => {
                w.put(&h.nonce)?;
                w.u8(h.ha_id)
            }
            Message::AuthResponse(a) => w.put(&a.mac),
            Message::AuthResult(r) => w.u8(r.code()),
            Message::Login(l) => {
                w.u16(l.version)?;
                w.u8(l.ha_mode)?;
                w.u8(l.ha_id)?;
                w.u32(l.max_payload)?;
                w.u32(l.max_inflight)?;
                w.u32(l.max_luns)?;
                w.u32(l.max_ports)?;
                w.u32(l.max_inits_per_port)?;
                w.u64(l.features)?;
                w.u64(l.node_id)
            }
            Message::LoginAck => Some(()),
            Message::LoginReject(r) => {
                w.u16(r.reason.code())?;
                w.u64(r.sender_value)?;
                w.u64(r.receiver_value)
            }
            Message::Heartbeat(v) | Message::HeartbeatAck(v) => w.u64(*v),
            Message::Bye(reason) => w.u16(reason.code()),
            Message::LunState(l) => {
                w.u32(l.lun_id)?;
                w.u8(l.role as u8)?;
                w.u8(l.nports)?;
                w.u16(0)?;
                w.u32(l.block_size)?;
                w.u64(l.blocks)?;
                w.put(&l.serial)?;
                for p in l.ports {
                    w.u16(p)?;
                }
                Some(())
            }
            Message::LunGone(id) => w.u32(*id),
            Message::PrBegin(b) => {
                w.u32(b.lun_id)?;
                w.u32(b.snapshot)?;
                w.u32(b.generation)?;
                w.u16(b.count)?;
                w.u8(b.res_type)?;
                w.u8(0)?;
                w.u16(b.holder.unwrap_or(0xFFFF))?;
                w.u16(0)
            }
            Message::PrReg(g) => {
                w.u32(g.lun_id)?;
                w.u32(g.snapshot)?;
                w.u16(g.index)?;
                w.u16(g.rel_port)?;
                w.u64(g.key)?;
                g.port.write(w)
            }
            Message::PrEnd(lun_id, snapshot) => {
                w.u32(*lun_id)?;
                w.u32(*snapshot)
            }
            Message::PrOut(o) => {
                w.u32(o.tag)?;
                w.u32(o.lun_id)?;
                w.u16(o.rel_port)?;
                w.u8(o.action)?;
                w.u8(o.res_type)?;
                w.u64(o.key)?;
                w.u64(o.sa_key)?;
                o.port.write(w)
            }
            Message::PrOutDone(d) => {
                w.u32(d.tag)?;
                w.u32(d.lun_id)?;
                w.u8(d.status)?;
                w.put(&d.sense)
            }
            Message::UaNexus(u) => {
                w.u32(u.lun_id)?;
                w.u16(u.rel_port)?;
                w.put(&u.asc)?;
                w.u16(0)?;
                u.port.write(w)
            }
            Message::UaAll(lun_id, asc) => {
                w.u32(*lun_id)?;
                w.put(asc)?;
                w.u16(0)
            }
            Message::AbortNexus(a) => {
                w.u32(a.lun_id)?;
                w.u32(a.token)?;
                w.u16(a.rel_port)?;
                w.u16(0)?;
                a.port.write(w)
            }
            Message::AbortDone(d) => {
                w.u32(d.lun_id)?;
                w.u32(d.token)
            }
            Message::AbortLun(a) => {
                w.u32(a.lun_id)?;
                w.u32(a.token)
            }
            Message::ModePages(m) => {
                w.u32(m.lun_id)?;
                w.u32(m.generation)?;
                w.u8(u8::from(m.wce))?;
                w.put(&[0; 3])
            }
            Message::IoReq(q) => {
                w.u32(q.tag)?;
                w.u32(q.lun_id)?;
                w.u8(q.op as u8)?;
                w.u8(u8::from(q.fua) | u8::from(q.ordered) << 1 | u8::from(q.head) << 2)?;
                w.u16(0)?;
                w.u64(q.sector)?;
                w.u32(q.len)
            }
            Message::IoData(d) => {
                w.u32(d.tag)?;
                w.u32(d.offset)
            }
            Message::IoDone(d) => {
                w.u32(d.tag)?;
                w.u32(d.lun_id)?;
                w.u8(d.status.code())?;
                w.put(&d.status.detail())
            }
            Message::IoAbort(a) => {
                w.u32(a.tag)?;
                w.u32(a.lun_id)
            }
            Message::OrderReq(q) => {
                w.u32(q.tag)?;
                w.u32(q.lun_id)?;
                w.u8(match (q.all, q.write) {
                    (true, _) => 3,
                    (false, true) => 2,
                    (false, false) => 1,
                })?;
                w.put(&[0; 3])?;
                w.u64(q.sector)?;
                w.u32(q.sectors)
            }
            Message::OrderGrant(g) => {
                w.u32(g.tag)?;
                w.u32(g.lun_id)?;
                w.u8(g.status.code())?;
                w.put(&[0; 3])
            }
            Message::OrderDone(d) => {
                w.u32(d.tag)?;
                w.u32(d.lun_id)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One message of every type, with distinctive field values.
    pub(crate) fn samples() -> [Message; 28] {
        let mut nonce = [0u8; NONCE_LEN];
        for (i, b) in nonce.iter_mut().enumerate() {
            *b = i as u8 ^ 0xa5;
        }
        [
            Message::Hello(Hello { nonce, ha_id: 2 }),
            Message::AuthResponse(AuthResponse {
                mac: [0x3c; MAC_LEN],
            }),
            Message::AuthResult(AuthResult::Failed),
            Message::Login(Login {
                version: 1,
                ha_mode: 2,
                ha_id: 1,
                max_payload: 0x0004_0000,
                max_inflight: 128,
                max_luns: 1024,
                max_ports: 256,
                max_inits_per_port: 2048,
                features: 0x8000_0001_0000_0003,
                node_id: 0x0123_4567_89ab_cdef,
            }),
            Message::LoginAck,
            Message::LoginReject(LoginReject {
                reason: RejectReason::HaMode,
                sender_value: 2,
                receiver_value: 0,
            }),
            Message::Heartbeat(0x1122_3344_5566_7788),
            Message::HeartbeatAck(7),
            Message::Bye(ByeReason::ConfigChanged),
            Message::LunState(lun_state()),
            Message::LunGone(16383),
            Message::PrBegin(PrBegin { lun_id: 7, snapshot: 3, generation: 9, count: 2, res_type: 1, holder: Some(1) }),
            Message::PrReg(pr_reg()),
            Message::PrEnd(7, 3),
            Message::PrOut(pr_out()),
            Message::PrOutDone(PrOutDone { tag: 9, lun_id: 7, status: 0x02, sense: [0x05, 0x26, 0x04] }),
            Message::UaNexus(UaNexus { lun_id: 7, rel_port: 0x21, asc: [0x2A, 0x05], port: pr_out().port }),
            Message::UaAll(7, [0x29, 0x03]),
            Message::IoReq(io_req()),
            Message::IoDone(IoDone { tag: 0x8000_0001, lun_id: 7, status: IoStatus::Blk(10) }),
            Message::ModePages(ModePages { lun_id: 7, generation: 0x0102_0304, wce: true }),
            Message::OrderReq(order_req()),
            Message::OrderGrant(OrderGrant { tag: 0x0506_0708, lun_id: 7, status: OrderStatus::NotHeld }),
            Message::OrderDone(OrderDone { tag: 0x0506_0708, lun_id: 16383 }),
            Message::AbortNexus(AbortNexus { lun_id: 7, token: 3, rel_port: 0x21, port: pr_out().port }),
            Message::AbortDone(AbortDone { lun_id: 7, token: 3 }),
            Message::IoAbort(IoAbort { tag: 0x0102_0304, lun_id: 7 }),
            Message::AbortLun(AbortLun { lun_id: 7, token: 4 }),
        ]
    }

    pub(crate) fn order_req() -> OrderReq {
        OrderReq { tag: 0x0506_0708, lun_id: 7, write: true, all: false, sector: 0x1_0000_0000, sectors: 2048 }
    }

    pub(crate) fn io_req() -> IoReq {
        IoReq { tag: 0x0102_0304, lun_id: 7, op: IoOp::Write, fua: true, ordered: false, head: false, sector: 0x1_0000_0000, len: 1 << 20 }
    }

    #[test]
    fn io_req_fields_are_checked() {
        let m = Message::IoReq(io_req());
        assert_eq!(field_of(m, 4, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(m, 8, &[0]), "op");
        assert_eq!(field_of(m, 8, &[8]), "op");
        assert_eq!(field_of(m, 9, &[8]), "flags");
        // ORDERED and HEAD OF QUEUE: reads and writes only, one of them.
        roundtrip(Message::IoReq(IoReq { ordered: true, ..io_req() }));
        roundtrip(Message::IoReq(IoReq { op: IoOp::Read, fua: false, ordered: true, ..io_req() }));
        roundtrip(Message::IoReq(IoReq { op: IoOp::Read, fua: false, head: true, ..io_req() }));
        assert_eq!(field_of(m, 9, &[7]), "flags");
        let flush = Message::IoReq(IoReq { op: IoOp::Flush, fua: false, len: 0, ..io_req() });
        assert_eq!(field_of(flush, 9, &[2]), "flags");
        assert_eq!(field_of(flush, 9, &[4]), "flags");
        assert_eq!(field_of(m, 10, &[1]), "reserved");
        // Not a multiple of 512, zero, over 8 MiB.
        assert_eq!(field_of(m, 20, &[1, 2, 0, 0]), "length");
        assert_eq!(field_of(m, 20, &[0, 0, 0, 0]), "length");
        assert_eq!(field_of(m, 20, &[0, 2, 0x80, 0]), "length");
        // A flush moves no data.
        assert_eq!(field_of(Message::IoReq(IoReq { op: IoOp::Flush, ..io_req() }), 20, &[0, 2, 0, 0]), "length");
        roundtrip(Message::IoReq(IoReq { op: IoOp::Flush, fua: false, len: 0, ..io_req() }));
        roundtrip(Message::IoReq(IoReq { op: IoOp::Read, fua: false, len: MAX_IO_BYTES, ..io_req() }));
        // Compare and write: up to 64 KiB compared, twice that in data.
        let caw = IoReq { op: IoOp::CompareAndWrite, fua: false, len: 512, ..io_req() };
        roundtrip(Message::IoReq(caw));
        assert_eq!(caw.data_len(), 1024);
        assert_eq!(caw.sectors(), 1);
        roundtrip(Message::IoReq(IoReq { len: MAX_CAW_BYTES, ..caw }));
        assert_eq!(field_of(Message::IoReq(caw), 20, &[0, 0, 2, 0]), "length");
        assert_eq!(field_of(Message::IoReq(caw), 20, &[1, 2, 0, 0]), "length");
        assert_eq!(io_req().data_len(), 1 << 20);
        assert_eq!(IoReq { op: IoOp::Read, ..io_req() }.data_len(), 0);
        // Sectors whose byte offset would not fit in 64 bits.
        assert_eq!(field_of(m, 12, &[0xff; 8]), "sector");
        assert_eq!(field_of(m, 12, &(MAX_SECTOR - 1).to_le_bytes()), "sector");
        roundtrip(Message::IoReq(IoReq { sector: MAX_SECTOR - 2048, ..io_req() }));
    }

    #[test]
    fn io_req_range_ops_count_sectors() {
        for op in [IoOp::Discard, IoOp::WriteZeroes, IoOp::WriteSame] {
            // Far more than 8 MiB, not a multiple of 512: a sector count.
            let q = IoReq { op, fua: false, len: 0xffff_ffff, sector: 8, ..io_req() };
            roundtrip(Message::IoReq(q));
            assert_eq!(q.sectors(), 0xffff_ffff);
            // An empty range is refused.
            assert_eq!(field_of(Message::IoReq(q), 20, &[0, 0, 0, 0]), "length");
            // The range must end within the sector space.
            let m = Message::IoReq(IoReq { sector: 0, ..q });
            assert_eq!(field_of(m, 12, &(MAX_SECTOR - 10).to_le_bytes()), "sector");
            roundtrip(Message::IoReq(IoReq { sector: MAX_SECTOR - 0xffff_ffff, ..q }));
        }
        assert_eq!(io_req().sectors(), 2048);
    }

    #[test]
    fn mode_pages_fields_are_checked() {
        let m = samples()[20];
        roundtrip(m);
        roundtrip(Message::ModePages(ModePages { lun_id: 0, generation: 0, wce: false }));
        assert_eq!(field_of(m, 0, &[0, 0, 0x40, 0]), "lun_id");
        assert_eq!(field_of(m, 8, &[3]), "flags");
        assert_eq!(field_of(m, 11, &[1]), "reserved");
    }

    #[test]
    fn abort_messages_fields_are_checked() {
        let (a, d) = (samples()[24], samples()[25]);
        roundtrip(a);
        roundtrip(d);
        assert_eq!(a.msg_type().as_u16(), 0x0119);
        assert_eq!(d.msg_type().as_u16(), 0x011A);
        assert_eq!(a.payload_len(), 256);
        assert_eq!(field_of(a, 0, &[0, 0, 0x40, 0]), "lun_id");
        assert_eq!(field_of(a, 10, &[1]), "reserved");
        // The initiator port as in PrReg: name length 0, padding.
        assert_eq!(field_of(a, 14, &[0, 0]), "name length");
        assert_eq!(field_of(a, 12 + 4 + 16 + 200, &[1]), "padding");
        assert_eq!(field_of(d, 0, &[0, 0, 0x40, 0]), "lun_id");
    }

    #[test]
    fn io_done_statuses() {
        for st in [IoStatus::Ok, IoStatus::Blk(1), IoStatus::Blk(63), IoStatus::NotHeld, IoStatus::Busy, IoStatus::Miscompare(0), IoStatus::Miscompare(MAX_CAW_BYTES - 1), IoStatus::Aborted] {
            roundtrip(Message::IoDone(IoDone { tag: 1, lun_id: 2, status: st }));
        }
        let m = samples()[19];
        for bad in [64u8, 0x7f, 0x84, 0xff] {
            assert_eq!(field_of(m, 8, &[bad]), "status");
        }
        assert_eq!(field_of(m, 10, &[1]), "reserved");
        // A miscompare's offset lies within the compared range.
        let mis = Message::IoDone(IoDone { tag: 1, lun_id: 2, status: IoStatus::Miscompare(100) });
        let mut buf = [0u8; 64];
        let n = mis.encode_payload(&mut buf).unwrap();
        assert_eq!(&buf[n - 3..n], &[100, 0, 0]);
        assert_eq!(field_of(mis, 9, &[0, 0, 1]), "offset");
        roundtrip(Message::IoDone(IoDone { tag: 1, lun_id: 2, status: IoStatus::Miscompare(0xffff) }));
        assert_eq!(field_of(m, 4, &[0, 0x40, 0, 0]), "lun_id");
    }

    #[test]
    fn io_abort_is_checked() {
        let m = Message::IoAbort(IoAbort { tag: u32::MAX, lun_id: MAX_LUN_ID });
        roundtrip(m);
        assert_eq!(field_of(m, 4, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(MsgType::IoAbort.payload_bounds(), (8, 8));
        assert_eq!(MsgType::from_u16(0x0123), Some(MsgType::IoAbort));
        let l = Message::AbortLun(AbortLun { lun_id: MAX_LUN_ID, token: u32::MAX });
        roundtrip(l);
        assert_eq!(field_of(l, 0, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(MsgType::AbortLun.payload_bounds(), (8, 8));
        assert_eq!(MsgType::from_u16(0x011B), Some(MsgType::AbortLun));
        let aborted = Message::IoDone(IoDone { tag: 1, lun_id: 2, status: IoStatus::Aborted });
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = aborted.encode_payload(&mut buf).unwrap();
        assert_eq!(&buf[8..n], &[0x83, 0, 0, 0]);
        // An aborted answer carries no offset.
        assert_eq!(field_of(aborted, 9, &[1]), "reserved");
    }

    #[test]
    fn roundtrip_order_messages() {
        for m in &samples()[21..] {
            roundtrip(*m);
        }
        let q = order_req();
        assert_eq!(q.end(), 0x1_0000_0000 + 2048);
        // Reads, one sector, the longest range, the last sectors.
        roundtrip(Message::OrderReq(OrderReq { write: false, sectors: 1, ..q }));
        roundtrip(Message::OrderReq(OrderReq { sectors: MAX_ORDER_SECTORS, ..q }));
        assert_eq!(MAX_ORDER_SECTORS, 1 << 23);
        // An ORDERED task's IO: the whole LUN.
        let all = OrderReq { all: true, sector: 0, sectors: 0, ..q };
        roundtrip(Message::OrderReq(all));
        assert_eq!(all.end(), u64::MAX);
        let last = OrderReq { tag: 0x7fff_ffff, lun_id: 0, sector: MAX_SECTOR - 2048, ..q };
        roundtrip(Message::OrderReq(last));
        assert_eq!(last.end(), MAX_SECTOR);
        for status in [OrderStatus::Go, OrderStatus::NotHeld, OrderStatus::Busy] {
            roundtrip(Message::OrderGrant(OrderGrant { tag: u32::MAX, lun_id: 16383, status }));
        }
        roundtrip(Message::OrderDone(OrderDone { tag: 0, lun_id: 0 }));
        assert_eq!(OrderReq { sector: u64::MAX, ..q }.end(), u64::MAX);
    }

    #[test]
    fn order_layouts_are_little_endian() {
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = Message::OrderReq(order_req()).encode_payload(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                8, 7, 6, 5, // tag
                7, 0, 0, 0, // lun_id
                2, // access: write
                0, 0, 0, // reserved
                0, 0, 0, 0, 1, 0, 0, 0, // sector
                0, 8, 0, 0, // sectors
            ]
        );
        let g = Message::OrderGrant(OrderGrant { tag: 1, lun_id: 2, status: OrderStatus::Busy });
        let n = g.encode_payload(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[1, 0, 0, 0, 2, 0, 0, 0, 0x81, 0, 0, 0]);
        let g = Message::OrderGrant(OrderGrant { tag: 1, lun_id: 2, status: OrderStatus::Go });
        let n = g.encode_payload(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let n = samples()[23].encode_payload(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[8, 7, 6, 5, 0xff, 0x3f, 0, 0]);
        assert_eq!(MsgType::OrderReq.as_u16(), 0x0130);
        assert_eq!(MsgType::OrderGrant.as_u16(), 0x0131);
        assert_eq!(MsgType::OrderDone.as_u16(), 0x0132);
        assert_eq!(MsgType::OrderGrant.name(), "OrderGrant");
    }

    #[test]
    fn order_req_fields_are_checked() {
        let m = Message::OrderReq(order_req());
        // Bit 31 of the tag.
        assert_eq!(field_of(m, 3, &[0x80]), "tag");
        assert_eq!(field_of(m, 0, &[0xff; 4]), "tag");
        assert_eq!(field_of(m, 4, &[0, 0x40, 0, 0]), "lun_id");
        for bad in [0u8, 4, 0x80, 0xff] {
            assert_eq!(field_of(m, 8, &[bad]), "access");
        }
        // "All" names no range.
        assert_eq!(field_of(m, 8, &[3]), "sector");
        let all = Message::OrderReq(OrderReq { all: true, sector: 0, sectors: 0, ..order_req() });
        assert_eq!(field_of(all, 20, &[1, 0, 0, 0]), "sectors");
        assert_eq!(field_of(all, 12, &[1]), "sector");
        for off in 9..12 {
            assert_eq!(field_of(m, off, &[1]), "reserved");
        }
        // Zero, one over 4 GiB, far over.
        assert_eq!(field_of(m, 20, &[0, 0, 0, 0]), "sectors");
        assert_eq!(field_of(m, 20, &(MAX_ORDER_SECTORS + 1).to_le_bytes()), "sectors");
        assert_eq!(field_of(m, 20, &[0xff; 4]), "sectors");
        // The range must end within the sector space (2048 sectors here).
        assert_eq!(field_of(m, 12, &[0xff; 8]), "sector");
        assert_eq!(field_of(m, 12, &(MAX_SECTOR - 2047).to_le_bytes()), "sector");
        assert_eq!(field_of(m, 12, &MAX_SECTOR.to_le_bytes()), "sector");
        let at_end = Message::OrderReq(OrderReq { sector: MAX_SECTOR - 1, sectors: 1, ..order_req() });
        roundtrip(at_end);
        assert_eq!(field_of(at_end, 20, &[2, 0, 0, 0]), "sector");
    }

    #[test]
    fn order_grant_and_done_fields_are_checked() {
        let g = samples()[22];
        assert_eq!(field_of(g, 4, &[0, 0x40, 0, 0]), "lun_id");
        for bad in [1u8, 0x3f, 0x7f, 0x82, 0xff] {
            assert_eq!(field_of(g, 8, &[bad]), "status");
        }
        for off in 9..12 {
            assert_eq!(field_of(g, off, &[1]), "reserved");
        }
        let d = samples()[23];
        assert_eq!(field_of(d, 4, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(d, 4, &[0xff; 4]), "lun_id");
    }

    #[test]
    fn order_payload_lengths_are_exact() {
        for (t, len) in [(MsgType::OrderReq, 24), (MsgType::OrderGrant, 12), (MsgType::OrderDone, 8)] {
            assert_eq!(t.payload_bounds(), (len, len));
            let buf = [0u8; 32];
            for short in [0, 1, len - 1] {
                assert_eq!(Message::decode(t, &buf[..short]), Err(WireError::PayloadTooShort { msg: t, len: short, min: len }));
            }
            for long in [len + 1, len + 8] {
                assert_eq!(Message::decode(t, &buf[..long]), Err(WireError::TrailingPayload { msg: t, len: long, max: len }));
            }
        }
    }

    #[test]
    fn io_data_carries_its_bytes_after_the_fields() {
        use super::super::crc::TableCrc32c;
        use super::super::frame::{encode_data_head, split_frame, trailer};
        use super::super::HEADER_LEN;
        let data: std::vec::Vec<u8> = (0..IO_CHUNK).map(|i| (i * 7) as u8).collect();
        let d = IoData { tag: 5, offset: MAX_IO_BYTES - IO_CHUNK as u32, len: IO_CHUNK as u32 };
        let mut frame = std::vec![0u8; HEADER_LEN + IO_DATA_HEAD];
        let n = encode_data_head(9, &d, &mut frame).unwrap();
        assert_eq!(n, frame.len());
        let t = trailer(&TableCrc32c, &[&frame, &data]);
        frame.extend_from_slice(&data);
        // Without its trailer the frame is not complete yet.
        assert!(split_frame(&frame).unwrap_err().is_incomplete());
        frame.extend_from_slice(&t);
        let (f, used) = split_frame(&frame).unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(Message::decode(f.header.msg_type, f.payload), Ok(Message::IoData(d)));
        assert_eq!(IoData::data_of(f.payload), &data[..]);
        // No data, too much data, past 8 MiB.
        let t = MsgType::IoData;
        assert!(matches!(Message::decode(t, &f.payload[..IO_DATA_HEAD]), Err(WireError::PayloadTooShort { .. })));
        let mut big = f.payload.to_vec();
        big.push(0);
        assert!(matches!(Message::decode(t, &big), Err(WireError::TrailingPayload { .. })));
        let mut past = f.payload.to_vec();
        past[4..8].copy_from_slice(&(MAX_IO_BYTES - IO_CHUNK as u32 + 1).to_le_bytes());
        assert!(matches!(Message::decode(t, &past), Err(WireError::InvalidField { field: "offset", .. })));
        // The head refuses a length no frame can carry.
        let mut head = [0u8; HEADER_LEN + IO_DATA_HEAD];
        assert!(encode_data_head(0, &IoData { len: IO_CHUNK as u32 + 1, ..d }, &mut head).is_err());
        assert!(encode_data_head(0, &IoData { len: 0, ..d }, &mut head).is_err());
    }

    pub(crate) fn pr_reg() -> PrReg {
        PrReg::new(7, 3, 1, 0x21, 0xabcd, 5, b"iqn.1994-05.com.redhat:ini", b"23d000000001").unwrap()
    }

    /// The field `decode` names after bytes at `off` of `m`'s payload are
    /// overwritten with `v`.
    fn field_of(m: Message, off: usize, v: &[u8]) -> &'static str {
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = m.encode_payload(&mut buf).unwrap();
        buf[off..off + v.len()].copy_from_slice(v);
        match Message::decode(m.msg_type(), &buf[..n]) {
            Err(WireError::InvalidField { field, .. }) => field,
            other => panic!("{off}: {other:?}"),
        }
    }

    pub(crate) fn pr_out() -> PrOut {
        let port = PortName::new(5, b"iqn.1994-05.com.redhat:ini", b"23d000000001").unwrap();
        PrOut { tag: 9, lun_id: 7, rel_port: 0x21, action: 4, res_type: 3, key: 0x1111, sa_key: 0x2222, port }
    }

    #[test]
    fn pr_out_fields_are_checked() {
        let out = Message::PrOut(pr_out());
        assert_eq!(field_of(out, 4, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(out, 10, &[7]), "service action");
        assert_eq!(field_of(out, 11, &[2]), "reservation type");
        assert_eq!(field_of(out, 28, &[0x10]), "protocol id");
        assert_eq!(field_of(out, 30, &[0, 0]), "name length");
        assert_eq!(field_of(out, 32 + 15, &[1]), "padding");
        let done = samples()[15];
        assert_eq!(field_of(done, 4, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(done, 8, &[0x08]), "status");
        assert_eq!(field_of(done, 8, &[0x00]), "status");
        assert_eq!(field_of(done, 9, &[0x10]), "status");
        roundtrip(Message::PrOutDone(PrOutDone { tag: 1, lun_id: 1, status: 0x18, sense: [0; 3] }));
        let ua = samples()[16];
        roundtrip(ua);
        assert_eq!(field_of(ua, 0, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(ua, 8, &[1, 0]), "reserved");
        assert_eq!(field_of(ua, 12, &[0, 0]), "name length");
        let all = samples()[17];
        roundtrip(all);
        assert_eq!(field_of(all, 0, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(all, 6, &[0, 1]), "reserved");
    }

    #[test]
    fn roundtrip_pr_snapshot_parts() {
        for m in &samples()[11..] {
            roundtrip(*m);
        }
        let g = pr_reg();
        assert_eq!(g.name(), b"iqn.1994-05.com.redhat:ini");
        assert_eq!(g.isid(), b"23d000000001");
        let none = PrBegin { lun_id: 1, snapshot: 1, generation: 0, count: 0, res_type: 0, holder: None };
        roundtrip(Message::PrBegin(none));
        let long = [b'n'; PR_NAME_LEN];
        roundtrip(Message::PrReg(PrReg::new(16383, u32::MAX, 127, 0xffff, u64::MAX, 0x0F, &long, &[b'i'; PR_ISID_LEN]).unwrap()));
    }

    #[test]
    fn pr_reg_new_refuses_what_cannot_be_sent() {
        assert!(PrReg::new(1, 1, 0, 1, 0, 5, b"n", b"").is_none());
        assert!(PrReg::new(1, 1, 0, 1, 1, 5, b"", b"").is_none());
        assert!(PrReg::new(1, 1, 0, 1, 1, 5, &[b'n'; PR_NAME_LEN + 1], b"").is_none());
        assert!(PrReg::new(1, 1, 0, 1, 1, 5, b"n", &[b'i'; PR_ISID_LEN + 1]).is_none());
        assert!(PrReg::new(1, 1, 0, 1, 1, 0x10, b"n", b"").is_none());
    }

    #[test]
    fn pr_fields_are_checked() {
        let begin = samples()[11];
        assert_eq!(field_of(begin, 0, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(begin, 12, &[129, 0]), "registration count");
        assert_eq!(field_of(begin, 14, &[2]), "reservation type");
        assert_eq!(field_of(begin, 14, &[9]), "reservation type");
        assert_eq!(field_of(begin, 15, &[1]), "reserved");
        assert_eq!(field_of(begin, 18, &[0, 1]), "reserved");
        assert_eq!(field_of(begin, 16, &[2, 0]), "holder index");
        // A holder without a reservation.
        assert_eq!(field_of(begin, 14, &[0]), "holder index");
        let reg = samples()[12];
        assert_eq!(field_of(reg, 0, &[0, 0x40, 0, 0]), "lun_id");
        assert_eq!(field_of(reg, 8, &[128, 0]), "index");
        assert_eq!(field_of(reg, 12, &[0; 8]), "key");
        assert_eq!(field_of(reg, 20, &[0x10]), "protocol id");
        assert_eq!(field_of(reg, 21, &[17]), "ISID length");
        assert_eq!(field_of(reg, 22, &[0, 0]), "name length");
        assert_eq!(field_of(reg, 22, &[224, 0]), "name length");
        assert_eq!(field_of(reg, 24 + 15, &[1]), "padding");
        assert_eq!(field_of(reg, 40 + 223, &[1]), "padding");
        assert_eq!(field_of(samples()[13], 0, &[0, 0x40, 0, 0]), "lun_id");
    }

    pub(crate) fn lun_state() -> LunState {
        let mut serial = [0u8; SERIAL_LEN];
        serial[..8].copy_from_slice(b"SER-0042");
        let mut ports = [0u16; MAX_LUN_PORTS];
        ports[0] = 0x21;
        ports[1] = 0x22;
        LunState {
            lun_id: 42,
            role: LunRole::Secondary,
            block_size: 4096,
            blocks: 0x1_0000_0000,
            serial,
            nports: 2,
            ports,
        }
    }

    #[test]
    fn roundtrip_lun_state_and_gone() {
        roundtrip(samples()[9]);
        roundtrip(samples()[10]);
        let l = lun_state();
        assert_eq!(l.ports(), &[0x21, 0x22]);
        assert_eq!(l.serial(), b"SER-0042");
    }

    #[test]
    fn lun_state_fields_are_checked() {
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = Message::LunState(lun_state()).encode_payload(&mut buf).unwrap();
        let bad = |off: usize, v: &[u8], field: &'static str| {
            let mut b = buf;
            b[off..off + v.len()].copy_from_slice(v);
            match Message::decode(MsgType::LunState, &b[..n]) {
                Err(WireError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        };
        bad(4, &[3], "role");
        bad(5, &[17], "port count");
        bad(6, &[1], "reserved");
        bad(0, &[0, 0x40, 0, 0], "lun_id");
        bad(8, &[0, 3, 0, 0], "block_size");
        bad(8, &[0, 0, 0, 0], "block_size");
        assert!(matches!(
            Message::decode(MsgType::LunGone, &[0xff, 0xff, 0, 0]),
            Err(WireError::InvalidField { field: "lun_id", .. })
        ));
    }

    fn roundtrip(m: Message) {
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = m.encode_payload(&mut buf).unwrap();
        assert_eq!(n, m.payload_len());
        assert_eq!(Message::decode(m.msg_type(), &buf[..n]), Ok(m));
        // The type number round-trips too.
        assert_eq!(MsgType::from_u16(m.msg_type().as_u16()), Some(m.msg_type()));
    }

    #[test]
    fn roundtrip_hello() {
        roundtrip(samples()[0]);
    }

    #[test]
    fn roundtrip_auth_response() {
        roundtrip(samples()[1]);
    }

    #[test]
    fn roundtrip_auth_result() {
        roundtrip(samples()[2]);
        roundtrip(Message::AuthResult(AuthResult::Ok));
    }

    #[test]
    fn roundtrip_login() {
        roundtrip(samples()[3]);
    }

    #[test]
    fn roundtrip_login_ack() {
        roundtrip(samples()[4]);
    }

    #[test]
    fn roundtrip_login_reject_every_reason() {
        roundtrip(samples()[5]);
        for code in 1..=20u16 {
            let reason = RejectReason::from_code(code).unwrap();
            assert_eq!(reason.code(), code);
            roundtrip(Message::LoginReject(LoginReject {
                reason,
                sender_value: u64::MAX,
                receiver_value: u64::from(code),
            }));
        }
    }

    #[test]
    fn roundtrip_heartbeat_and_ack() {
        roundtrip(samples()[6]);
        roundtrip(samples()[7]);
    }

    #[test]
    fn roundtrip_bye_every_reason() {
        roundtrip(samples()[8]);
        for code in 1..=10u16 {
            let reason = ByeReason::from_code(code).unwrap();
            assert_eq!(reason.code(), code);
            roundtrip(Message::Bye(reason));
        }
    }

    #[test]
    fn login_layout_is_little_endian() {
        let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
        let n = samples()[3].encode_payload(&mut buf).unwrap();
        assert_eq!(n, 40);
        assert_eq!(
            &buf[..n],
            &[
                1, 0, // version
                2, // ha_mode
                1, // ha_id
                0, 0, 4, 0, // max_payload
                128, 0, 0, 0, // max_inflight
                0, 4, 0, 0, // max_luns
                0, 1, 0, 0, // max_ports
                0, 8, 0, 0, // max_inits_per_port
                3, 0, 0, 0, 1, 0, 0, 0x80, // features
                0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // node_id
            ]
        );
    }

    #[test]
    fn unknown_type_numbers() {
        for v in [0u16, 4, 0x000f, 0x0013, 0x0102, 0x0113, 0x0124, 0x012f, 0x0133, 0x01ff, 0x0300, 0xffff] {
            assert_eq!(MsgType::from_u16(v), None, "{v:#x}");
        }
    }

    #[test]
    fn short_payload_rejected_for_every_type() {
        for m in samples() {
            let t = m.msg_type();
            let (min, _) = t.payload_bounds();
            if min == 0 {
                continue;
            }
            let buf = [0u8; MAX_MESSAGE_PAYLOAD];
            assert_eq!(
                Message::decode(t, &buf[..min - 1]),
                Err(WireError::PayloadTooShort {
                    msg: t,
                    len: min - 1,
                    min
                })
            );
        }
    }

    #[test]
    fn trailing_payload_rejected_for_every_type() {
        for m in samples() {
            let t = m.msg_type();
            let mut buf = [0u8; MAX_MESSAGE_PAYLOAD + 1];
            let n = m.encode_payload(&mut buf).unwrap();
            assert_eq!(
                Message::decode(t, &buf[..n + 1]),
                Err(WireError::TrailingPayload {
                    msg: t,
                    len: n + 1,
                    max: n
                })
            );
        }
    }

    #[test]
    fn invalid_auth_result_code() {
        for v in [0u8, 3, 0xff] {
            assert_eq!(
                Message::decode(MsgType::AuthResult, &[v]),
                Err(WireError::InvalidField {
                    msg: MsgType::AuthResult,
                    field: "result",
                    value: u64::from(v),
                })
            );
        }
    }

    #[test]
    fn zero_reason_codes_rejected() {
        assert_eq!(
            Message::decode(MsgType::Bye, &[0, 0]),
            Err(WireError::InvalidField {
                msg: MsgType::Bye,
                field: "reason",
                value: 0
            })
        );
        assert_eq!(
            Message::decode(MsgType::LoginReject, &[0u8; 18]),
            Err(WireError::InvalidField {
                msg: MsgType::LoginReject,
                field: "reason",
                value: 0
            })
        );
    }

    #[test]
    fn encode_into_small_buffer_fails_cleanly() {
        for m in samples() {
            let need = m.payload_len();
            if need == 0 {
                continue;
            }
            let mut buf = [0u8; MAX_MESSAGE_PAYLOAD];
            assert_eq!(
                m.encode_payload(&mut buf[..need - 1]),
                Err(EncodeError::BufferTooSmall {
                    need,
                    have: need - 1
                })
            );
        }
    }

    #[test]
    fn bye_reason_display() {
        use std::string::ToString;
        assert_eq!(ByeReason::Shutdown.to_string(), "shutdown");
        assert_eq!(ByeReason::Other(99).to_string(), "reason code 99");
    }
}
