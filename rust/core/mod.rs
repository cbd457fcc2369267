// SPDX-License-Identifier: GPL-2.0

//! Plain-Rust logic of tcm_ha: no kernel types, only `core`.
//!
//! These files compile into the module and into the host crate (`host/`) for
//! `cargo test` and fuzzing.

pub(crate) mod control;
pub(crate) mod link;
pub(crate) mod node;
pub(crate) mod scsi;
pub(crate) mod wire;

/// Interlink protocol version announced at login; peers must match exactly.
/// Version 2 added the CRC32C trailer to every frame (`wire::TRAILER_LEN`);
/// a version 1 peer's first frame is refused by its header's version.
/// Version 3 added OrderReq access 3 (an ORDERED task's IO, the whole LUN)
/// and ranges up to 2^23 sectors (WRITE SAME and UNMAP are ordered too).
/// Version 6 added IoAbort (an aborted command's IO the primary has not
/// started is dropped) and IoDone status 0x83 (aborted).
pub(crate) const PROTOCOL_VERSION: u16 = 6;
