// SPDX-License-Identifier: GPL-2.0

//! Commands: a safe handle on LIO's `se_cmd` and the `exec_cmd_ops` that
//! `sbc_parse_cdb()` routes READ/WRITE (all sizes, WRITE VERIFY, COMPARE AND
//! WRITE's read and write), SYNCHRONIZE CACHE, WRITE SAME and UNMAP to.
//!
//! Every callback either completes the command exactly once (possibly later,
//! from bio completion) and returns 0, or returns a sense reason and leaves
//! completion to LIO. Nothing here blocks the submitter except UNMAP and
//! zero-WRITE SAME, which LIO runs in process context like iblock does, and
//! in mode 1 any WRITE SAME, which waits there for the primary's order.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::{bindings as kb, prelude::*};

use super::bindings as b;
use super::bio;
use super::bufio::Gated;
use super::ticket::{self, Ticket};
use super::{Device, IoRef};
use crate::core_logic::scsi::{
    io::{self, Completion},
    sense::Sense,
    DataIn,
};
use crate::configfs::NODE;
use crate::core_logic::scsi::alua::HaMode;
use crate::core_logic::scsi::opcode as op;
use crate::core_logic::wire::msg::{IoOp, PortName, MAX_CAW_BYTES};
use crate::scsi::{NexusKey, ISID_LEN};

/// The type of `se_cmd::execute_cmd`.
pub(crate) type ExecFn = unsafe extern "C" fn(*mut b::se_cmd) -> b::sense_reason_t;

/// LIO's sense buffer size (`TRANSPORT_SENSE_BUFFER`):
/// `transport_copy_sense_to_cmd()` copies this many bytes.
const SENSE_BUFFER: usize = 96;

/// Sense reasons LIO turns into sense data itself.
pub(crate) mod reason {
    use super::b;
    /// Success.
    pub(crate) const NONE: b::sense_reason_t = 0;
    /// ILLEGAL REQUEST, invalid field in CDB.
    pub(crate) const INVALID_CDB_FIELD: b::sense_reason_t =
        b::tcm_sense_reason_table_TCM_INVALID_CDB_FIELD as b::sense_reason_t;
    /// Resources exhausted (BUSY-like retry for the initiator).
    pub(crate) const OUT_OF_RESOURCES: b::sense_reason_t =
        b::tcm_sense_reason_table_TCM_OUT_OF_RESOURCES as b::sense_reason_t;
    /// Backing device unusable.
    pub(crate) const LUN_COMMUNICATION_FAILURE: b::sense_reason_t =
        b::tcm_sense_reason_table_TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE as b::sense_reason_t;
    /// BUSY status: the initiator retries.
    pub(crate) const LUN_BUSY: b::sense_reason_t = b::tcm_sense_reason_table_TCM_LUN_BUSY as b::sense_reason_t;
    /// NOT READY, ASYMMETRIC ACCESS STATE TRANSITION: the initiator retries.
    pub(crate) const ALUA_TRANSITION: b::sense_reason_t =
        b::tcm_sense_reason_table_TCM_ALUA_STATE_TRANSITION as b::sense_reason_t;
    /// ILLEGAL REQUEST, invalid command operation code.
    pub(crate) const UNSUPPORTED_SCSI_OPCODE: b::sense_reason_t =
        b::tcm_sense_reason_table_TCM_UNSUPPORTED_SCSI_OPCODE as b::sense_reason_t;
}

/// What `se_cmd::priv_` holds once [`gate`] has taken the function it
/// kept there: never a function's address (those are far above).
mod run {
    /// The backstore executes the command and ends it through
    /// [`super::Cmd::complete`] or [`super::Cmd::respond`].
    pub(super) const OURS: usize = 1;
    /// As `OURS`, and PREEMPT AND ABORT aborted it: it ends with TASK
    /// ABORTED.
    pub(super) const ABORTED: usize = 2;
    /// LIO ends the command (its own emulation, UNMAP, COMPARE AND WRITE,
    /// PR OUT): it is never marked aborted.
    pub(super) const LIO: usize = 3;
    /// The command has ended.
    pub(super) const ENDED: usize = 4;
    /// Largest of these.
    pub(super) const MAX: usize = ENDED;
}

/// A command LIO handed to the backstore.
pub(crate) struct Cmd(NonNull<b::se_cmd>);

// SAFETY: a `Cmd` is the one handle on an uncompleted command, and LIO lets
// a backend complete a command from any context (iblock does from bio
// completion); a parked command is completed by the interlink thread.
unsafe impl Send for Cmd {}

impl Cmd {
    /// # Safety
    /// `cmd` must be a live command of an `ha` device that has not been
    /// completed yet.
    pub(crate) unsafe fn from_raw(cmd: *mut b::se_cmd) -> Option<Cmd> {
        NonNull::new(cmd).map(Cmd)
    }

    fn raw(&self) -> *mut b::se_cmd {
        self.0.as_ptr()
    }

    /// The command's pointer, for a bio completion to find it again.
    pub(crate) fn as_raw(&self) -> *mut b::se_cmd {
        self.raw()
    }

    /// The device the command is for.
    pub(crate) fn device(&self) -> &Device {
        // SAFETY: LIO sets `se_dev` before any backend callback, and the
        // device outlives its commands.
        unsafe { Device::from_se_dev((*self.raw()).se_dev) }
    }

    pub(crate) fn se_dev(&self) -> *mut b::se_device {
        // SAFETY: as in `device`.
        unsafe { (*self.raw()).se_dev }
    }

    /// The CDB (LIO's buffer holds at least 32 bytes).
    pub(crate) fn cdb(&self) -> &[u8] {
        // SAFETY: `t_task_cdb` points to the inline 32-byte buffer or to a
        // larger allocation, both alive as long as the command.
        unsafe { core::slice::from_raw_parts((*self.raw()).t_task_cdb, 32) }
    }

    /// The first LBA of the command.
    pub(crate) fn lba(&self) -> u64 {
        // SAFETY: set by the CDB parser before execution.
        unsafe { (*self.raw()).t_task_lba }
    }

    /// The device's logical block size.
    pub(crate) fn block_size(&self) -> u32 {
        // SAFETY: as in `se_dev`.
        unsafe { (*self.se_dev()).dev_attrib.block_size }
    }

    /// Whether a write goes through to the medium: the CDB asked for
    /// forced unit access, or the write cache is disabled (WCE 0).
    pub(crate) fn fua(&self) -> bool {
        // SAFETY: flags are set by the parser before execution.
        let fua = unsafe { (*self.raw()).se_cmd_flags & b::se_cmd_flags_table_SCF_FUA != 0 };
        fua || !self.device().ha().scsi.wce()
    }

    /// Whether the command is an ORDERED task.
    pub(crate) fn ordered(&self) -> bool {
        // SAFETY: set by the fabric before execution.
        let attr = unsafe { (*self.raw()).sam_task_attr };
        attr == b::TCM_ORDERED_TAG as core::ffi::c_int
    }

    /// Whether the command is a HEAD OF QUEUE task.
    pub(crate) fn head_of_queue(&self) -> bool {
        // SAFETY: set by the fabric before execution.
        let attr = unsafe { (*self.raw()).sam_task_attr };
        attr == b::TCM_HEAD_TAG as core::ffi::c_int
    }

    /// `n` logical blocks as 512-byte sectors.
    pub(crate) fn sectors(&self, n: u64) -> u64 {
        // SAFETY: a configured device; the function only reads its block size.
        unsafe { b::target_to_linux_sector(self.se_dev(), n) }
    }

    /// Whether the command came through a read-only LUN mapping.
    pub(crate) fn lun_read_only(&self) -> bool {
        // SAFETY: a live command; LIO reads its LUN and ACL under RCU.
        unsafe { b::target_lun_is_rdonly(self.raw()) }
    }

    /// FUA support and TAS as the device's attributes set them.
    pub(crate) fn fua_and_tas(&self) -> (bool, bool) {
        // SAFETY: attributes of a configured device, changed only through
        // configfs (a racing read sees the old or the new value).
        let a = unsafe { &(*self.se_dev()).dev_attrib };
        (a.emulate_fua_write, a.emulate_tas)
    }

    /// The number of blocks a COMPARE AND WRITE compares (and writes).
    pub(crate) fn caw_blocks(&self) -> u32 {
        // SAFETY: set by the CDB parser before execution.
        unsafe { (*self.raw()).t_task_nolb }
    }

    /// Takes a COMPARE AND WRITE away from LIO's two-step execution (read,
    /// then compare and write in the completion callback): this command
    /// completes as a plain one.
    fn leave_lio_caw(&self) {
        // SAFETY: the command is being executed by us; LIO reads the
        // callback only when it completes, fails or aborts the command,
        // after this.
        unsafe { (*self.raw()).transport_complete_callback = None };
    }

    /// The number of blocks a WRITE SAME covers.
    pub(crate) fn write_same_blocks(&self) -> u64 {
        // SAFETY: a WRITE SAME command, as routed by `sbc_parse_cdb`.
        unsafe { b::sbc_get_write_same_sectors(self.raw()) }
    }

    /// The command's data-out scatterlist.
    pub(crate) fn data_sg(&self) -> (*mut kb::scatterlist, u32) {
        // SAFETY: set up by the fabric before execution.
        unsafe { ((*self.raw()).t_data_sg.cast(), (*self.raw()).t_data_nents) }
    }

    /// Runs `f` over the first `len` bytes of the command's data mapped into
    /// kernel memory; `None` if it cannot be mapped or is shorter.
    pub(crate) fn with_data<R>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        // SAFETY: maps the command's data scatterlist; unmapped below.
        let p = unsafe { b::transport_kmap_data_sg(self.raw()) }.cast::<u8>();
        if p.is_null() {
            return None;
        }
        // SAFETY: read-only access to the length field.
        let have = unsafe { (*self.raw()).data_length } as usize;
        let r = (len <= have).then(|| {
            // SAFETY: the mapping covers `data_length` bytes, exclusively
            // ours while the command executes.
            f(unsafe { core::slice::from_raw_parts_mut(p, len) })
        });
        // SAFETY: mapped above.
        unsafe { b::transport_kunmap_data_sg(self.raw()) };
        r
    }

    /// Bytes the command transfers: the allocation length of a data-in
    /// command, the parameter list length of a data-out one.
    pub(crate) fn data_length(&self) -> usize {
        // SAFETY: set by the CDB parser before execution.
        unsafe { (*self.raw()).data_length as usize }
    }

    /// The portal group (target port) the command arrived through.
    fn tpg(&self) -> Option<NonNull<b::se_portal_group>> {
        // SAFETY: `se_lun` is set before any backend callback and pins its
        // portal group while the command lives.
        let lun = NonNull::new(unsafe { (*self.raw()).se_lun })?;
        // SAFETY: as above.
        NonNull::new(unsafe { (*lun.as_ptr()).lun_tpg })
    }

    /// Relative target port identifier of the target port.
    pub(crate) fn rel_port(&self) -> u16 {
        // SAFETY: the portal group outlives the command.
        self.tpg().map_or(0, |t| unsafe { (*t.as_ptr()).tpg_rtpi })
    }

    /// SCSI protocol identifier of the fabric.
    pub(crate) fn proto(&self) -> u8 {
        // SAFETY: as in `rel_port`.
        self.tpg().map_or(0, |t| unsafe { (*t.as_ptr()).proto_id } as u8)
    }

    /// The target port's WWN (e.g. the target IQN) and portal group tag.
    pub(crate) fn target_port(&self) -> Option<(&[u8], u16)> {
        let tpg = self.tpg()?.as_ptr();
        // SAFETY: the fabric ops of a registered portal group are static.
        let tfo = unsafe { (*tpg).se_tpg_tfo.as_ref() }?;
        // SAFETY: fabric callbacks on the command's live portal group; the
        // WWN string lives as long as the portal group.
        let (wwn, tag) = unsafe { (tfo.tpg_get_wwn?(tpg), tfo.tpg_get_tag.map_or(0, |f| f(tpg))) };
        if wwn.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string owned by the fabric (see above).
        Some((unsafe { CStr::from_char_ptr(wwn) }.to_bytes(), tag))
    }

    /// The command's I_T nexus, `None` for LIO's internal commands (XCOPY)
    /// that have no initiator port. `isid` receives the ISID text.
    pub(crate) fn nexus<'a>(&'a self, isid: &'a mut [u8; ISID_LEN]) -> Option<NexusKey<'a>> {
        // SAFETY: the session outlives its commands.
        let sess = NonNull::new(unsafe { (*self.raw()).se_sess })?.as_ptr();
        // SAFETY: as above; the ACL outlives its sessions.
        let acl = unsafe { (*sess).se_node_acl.as_ref() }?;
        let name = acl.initiatorname.split(|c| *c == 0).next().unwrap_or(&[]);
        let tpg = self.tpg()?.as_ptr();
        // SAFETY: as in `target_port`.
        let tfo = unsafe { (*tpg).se_tpg_tfo.as_ref() }?;
        let isid_len = match tfo.sess_get_initiator_sid {
            Some(f) => {
                // SAFETY: the fabric writes at most `ISID_LEN` bytes of text.
                let n = unsafe { f(sess, isid.as_mut_ptr(), ISID_LEN as u32) };
                n as usize
            }
            None => 0,
        };
        let isid = isid.get(..isid_len.min(ISID_LEN)).unwrap_or(&[]);
        let isid = isid.split(|c| *c == 0).next().unwrap_or(&[]);
        Some(NexusKey { proto: self.proto(), initiator: name, isid, rel_port: self.rel_port() })
    }

    /// Replaces the function LIO runs to execute the command.
    fn set_exec(&self, f: ExecFn) {
        // SAFETY: the command is still being set up (`parse_cdb`).
        unsafe { (*self.raw()).execute_cmd = Some(f) };
    }

    /// Puts `gate` in front of the function LIO would run, which is kept
    /// in the backend-private field for [`Cmd::stashed_exec`].
    fn wrap_exec(&self, gate: ExecFn) {
        // SAFETY: as in `set_exec`; `priv` belongs to the backend.
        unsafe {
            if let Some(orig) = (*self.raw()).execute_cmd {
                (*self.raw()).priv_ = orig as *mut c_void;
                (*self.raw()).execute_cmd = Some(gate);
            }
        }
    }

    /// The function `wrap_exec` put aside.
    fn stashed_exec(&self) -> Option<ExecFn> {
        let p = self.run_state().load(Ordering::Acquire);
        if (p as usize) <= run::MAX {
            return None;
        }
        // SAFETY: `priv` above the `run` states holds an `ExecFn` (see
        // `wrap_exec`).
        Some(unsafe { core::mem::transmute::<*mut c_void, ExecFn>(p) })
    }

    /// `se_cmd::priv_`: the function `wrap_exec` kept, then a [`run`]
    /// state, changed atomically (PREEMPT AND ABORT marks commands while
    /// they execute).
    fn run_state(&self) -> &AtomicPtr<c_void> {
        // SAFETY: `priv_` is a properly aligned pointer field of the live
        // command, which only this backend uses; after parsing it is only
        // accessed through this atomic view.
        unsafe { AtomicPtr::from_ptr(core::ptr::addr_of_mut!((*self.raw()).priv_)) }
    }

    /// Marks the command ended; whether PREEMPT AND ABORT had aborted it
    /// (it must then end with TASK ABORTED).
    fn end_run(&self) -> bool {
        let was = self.run_state().swap(run::ENDED as *mut c_void, Ordering::AcqRel);
        if was as usize != run::ABORTED {
            return false;
        }
        self.device().abort_ended();
        true
    }

    /// Marks the command aborted if the backstore is executing it for the
    /// I_T nexus of one of `nexuses` (initiator port, relative target port),
    /// or for any nexus (`None`: a LOGICAL UNIT RESET); the index of that
    /// nexus (0 for any).
    fn mark_aborted(&self, nexuses: Option<&[(PortName, u16)]>) -> Option<usize> {
        if self.run_state().load(Ordering::Acquire) as usize != run::OURS {
            return None;
        }
        let hit = match nexuses {
            None => 0,
            Some(nexuses) => {
                let mut isid = [0u8; ISID_LEN];
                let k = self.nexus(&mut isid)?;
                nexuses.iter().position(|(p, rel_port)| {
                    *rel_port == k.rel_port && p.proto == k.proto && p.name() == k.initiator && p.isid() == k.isid
                })?
            }
        };
        // Counted first: the command may end as soon as it is marked.
        let d = self.device();
        d.abort_begin();
        let marked = self
            .run_state()
            .compare_exchange(run::OURS as *mut c_void, run::ABORTED as *mut c_void, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !marked {
            d.abort_undo();
            return None;
        }
        Some(hit)
    }

    /// Runs an emulation that writes data-in into the command's buffer;
    /// `None` if the buffer cannot be mapped. Finish with [`Cmd::respond`].
    pub(crate) fn data_in(&self, f: impl FnOnce(&mut [u8]) -> Result<DataIn, Sense>) -> Option<Result<DataIn, Sense>> {
        match self.data_length() {
            0 => Some(f(&mut [])),
            len => self.with_data(len, f),
        }
    }

    /// Completes the command with the outcome of [`Cmd::data_in`]: GOOD
    /// with the length built, or CHECK CONDITION.
    pub(crate) fn respond(self, r: Option<Result<DataIn, Sense>>) -> b::sense_reason_t {
        match r {
            None => reason::OUT_OF_RESOURCES,
            Some(Err(s)) => {
                self.complete(Completion::Check(s));
                reason::NONE
            }
            Some(Ok(_)) if self.end_run() => {
                self.complete_aborted();
                reason::NONE
            }
            Some(Ok(d)) => {
                let n = core::ffi::c_int::try_from(d.len).unwrap_or(core::ffi::c_int::MAX);
                // SAFETY: the command is live and completed exactly once.
                unsafe { b::target_complete_cmd_with_length(self.raw(), b::sam_status_SAM_STAT_GOOD as u8, n) };
                reason::NONE
            }
        }
    }

    /// Completes the command (with TASK ABORTED if PREEMPT AND ABORT
    /// aborted it). It must not be used afterwards, which taking `self`
    /// enforces.
    pub(crate) fn complete(self, c: Completion) {
        if self.end_run() {
            return self.complete_aborted();
        }
        let status = match c {
            Completion::Good => b::sam_status_SAM_STAT_GOOD,
            Completion::Busy => b::sam_status_SAM_STAT_BUSY,
            Completion::ReservationConflict => b::sam_status_SAM_STAT_RESERVATION_CONFLICT,
            Completion::Check(sense) => {
                let mut buf = [0u8; SENSE_BUFFER];
                sense.build_fixed(&mut buf);
                // SAFETY: `buf` holds the SENSE_BUFFER bytes LIO copies.
                unsafe { b::transport_copy_sense_to_cmd(self.raw(), buf.as_mut_ptr()) };
                b::sam_status_SAM_STAT_CHECK_CONDITION
            }
        };
        self.complete_status(status);
    }

    /// Ends a command PREEMPT AND ABORT aborted: with TASK ABORTED when
    /// the device's TAS attribute is set (the default), otherwise without
    /// any status (SPC-4 control mode page, TAS 0): LIO's abort handling
    /// releases it through the fabric, and the nexus has been given a
    /// COMMANDS CLEARED BY ANOTHER INITIATOR unit attention
    /// (`Device::abort_commands`).
    fn complete_aborted(self) {
        if !self.device().tas() {
            // SAFETY: the command is live and not yet completed; the helper
            // takes its state lock.
            let marked = unsafe { b::tcm_ha_cmd_abort_silently(self.raw()) };
            if marked {
                super::PREEMPT_SILENT.fetch_add(1, Ordering::Relaxed);
            }
        }
        // With the mark, LIO sends no status (it sees CMD_T_ABORTED).
        self.complete_status(b::sam_status_SAM_STAT_TASK_ABORTED);
    }

    fn complete_status(self, status: b::sam_status) {
        // SAFETY: the command is live and completed exactly once here.
        unsafe { b::target_complete_cmd(self.raw(), status as u8) };
    }
}

/// Marks aborted the commands of `nexuses`, or all (`None`; see [`Cmd::mark_aborted`])
/// among those LIO is executing for `dev`; how many, and which of the
/// first 64 nexuses had any (bit i for `nexuses[i]`; every bit from 64 on
/// is folded into bit 63).
pub(crate) fn abort_commands(dev: *mut b::se_device, nexuses: Option<&[(PortName, u16)]>) -> (u32, u64) {
    let mut n = 0;
    let mut hit = 0u64;
    // SAFETY: `dev` is a configured device of ours (the caller's).
    let queues = unsafe { b::tcm_ha_dev_queue_cnt(dev) };
    for q in 0..queues {
        // SAFETY: `q` is a valid queue index of `dev`.
        let flags = unsafe { b::tcm_ha_dev_queue_lock(dev, q) };
        // SAFETY: the list is walked under its lock.
        let mut cur = unsafe { b::tcm_ha_dev_queue_next(dev, q, core::ptr::null_mut()) };
        while let Some(raw) = NonNull::new(cur) {
            // A command on the list is live until LIO takes it off, which
            // needs the lock held here.
            let c = Cmd(raw);
            if let Some(i) = c.mark_aborted(nexuses) {
                n += 1;
                hit |= 1u64 << i.min(63);
            }
            // SAFETY: as above; `cur` is on list `q`.
            cur = unsafe { b::tcm_ha_dev_queue_next(dev, q, cur) };
        }
        // SAFETY: taken above with these flags.
        unsafe { b::tcm_ha_dev_queue_unlock(dev, q, flags) };
    }
    (n, hit)
}

/// Whether the backstore ends a command with this CDB through
/// [`Cmd::complete`] or [`Cmd::respond`] (given what `parse_cdb` chose):
/// LIO's parser routes reads, writes and SYNCHRONIZE CACHE to our
/// `exec_cmd_ops`, and `spc::emulation` takes over the SPC commands the
/// backstore owns (except PR OUT, which must not be aborted by another
/// nexus's PREEMPT AND ABORT half-way).
fn completed_by_us(cdb: &[u8]) -> bool {
    let Some(&code) = cdb.first() else { return false };
    match code {
        op::READ_6 | op::READ_10 | 0xA8 | op::READ_16 | op::WRITE_6 | op::WRITE_10 | 0xAA | op::WRITE_16 => true,
        op::WRITE_VERIFY_10 | op::WRITE_VERIFY_16 | op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => true,
        op::PERSISTENT_RESERVE_OUT => false,
        _ => super::spc::emulation(cdb).is_some(),
    }
}

/// The data scatterlist an IO callback of a command was given (the
/// command's own, or the part COMPARE AND WRITE reads into); valid until
/// the command completes.
pub(crate) struct DataSg {
    sg: *mut kb::scatterlist,
    nents: u32,
}

// SAFETY: the scatterlist belongs to an uncompleted command, whose data
// any thread may copy until it completes it.
unsafe impl Send for DataSg {}

impl DataSg {
    /// # Safety
    /// `sg` must be a scatterlist of `nents` entries of a command that is
    /// not completed while this value is used.
    unsafe fn new(sg: *mut kb::scatterlist, nents: u32) -> DataSg {
        DataSg { sg, nents }
    }

    /// Bytes it holds.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: per `DataSg::new`.
        unsafe { bio::SgIter::new(self.sg, self.nents) }.map(|s| s.len() as usize).sum()
    }

    /// Copies its bytes into `out`; returns how many.
    pub(crate) fn copy_out(&self, out: &mut [u8]) -> usize {
        // SAFETY: per `DataSg::new`; `out` is writable for its length.
        unsafe { kb::sg_copy_to_buffer(self.sg, self.nents, out.as_mut_ptr().cast(), out.len()) }
    }

    /// Copies `data` into it; returns how many bytes.
    pub(crate) fn copy_in(&self, data: &[u8]) -> usize {
        // SAFETY: per `DataSg::new`; the kernel only reads `data`.
        unsafe { kb::sg_copy_from_buffer(self.sg, self.nents, data.as_ptr().cast(), data.len()) }
    }
}

/// A use of the backing device of the command's device, or `None` while
/// this node does not hold it (a secondary released it after the command
/// was admitted: the initiator retries the command as for an ALUA
/// transition).
fn bdev_of(cmd: &Cmd) -> Option<IoRef> {
    cmd.device().io_begin()
}

/// What a write to a `readonly=1` device gets: DATA PROTECT, WRITE PROTECTED.
const WRITE_PROTECTED: b::sense_reason_t = b::tcm_sense_reason_table_TCM_WRITE_PROTECTED as b::sense_reason_t;

/// What a command gets when the backing device is not held.
const NOT_HELD: b::sense_reason_t = reason::ALUA_TRANSITION;

/// The data of one read or write callback of a command (its own
/// scatterlist, or the part COMPARE AND WRITE reads into) and its
/// direction; valid until the command completes.
pub(crate) struct Rw {
    sgl: *mut kb::scatterlist,
    nents: u32,
    write: bool,
}

// SAFETY: the scatterlist belongs to an uncompleted command, which any
// thread may submit IO for until it completes it.
unsafe impl Send for Rw {}

impl Rw {
    /// Bytes it moves.
    pub(crate) fn bytes(&self) -> usize {
        // SAFETY: the command's scatterlist of `nents` entries (see the type).
        unsafe { bio::SgIter::new(self.sgl, self.nents) }.map(|s| s.len() as usize).sum()
    }

    /// Whether it writes.
    pub(crate) fn write(&self) -> bool {
        self.write
    }
}

/// Submits the bios of read or write `rw` of command `cmd` at its LBA on
/// `io`'s device; `end_io` runs once with `private` when they complete.
/// `Err`: nothing was submitted.
///
/// # Safety
/// `cmd` must be the live, uncompleted command `rw` belongs to, and stay
/// so until `end_io` runs.
pub(crate) unsafe fn submit_rw(
    cmd: *mut b::se_cmd,
    io: &IoRef,
    rw: &Rw,
    private: *mut core::ffi::c_void,
    end_io: unsafe extern "C" fn(*mut kb::bio),
) -> Result {
    // SAFETY: per this function's contract.
    let c = unsafe { Cmd::from_raw(cmd) }.ok_or(EINVAL)?;
    let opf = match (rw.write, c.fua()) {
        (false, _) => bio::OP_READ,
        (true, false) => bio::OP_WRITE | bio::SYNC_WRITE,
        (true, true) => bio::OP_WRITE | bio::SYNC_WRITE | bio::FUA,
    };
    let sector = c.sectors(c.lba());
    // SAFETY: the command's scatterlist of `nents` entries (see `Rw`).
    let segs = unsafe { bio::SgIter::new(rw.sgl, rw.nents) };
    io.bdev().submit(sector, opf, u64::from(rw.nents), segs, private, end_io)
}

/// Submits read or write `rw` of `c` on `io` counted as `gated` by
/// `crate::barrier` (the count ends at completion). `Err`: nothing was
/// submitted, the command comes back uncompleted.
pub(crate) fn submit_gated(c: Cmd, io: IoRef, rw: Rw, gated: Gated) -> core::result::Result<(), Cmd> {
    let end_io: unsafe extern "C" fn(*mut kb::bio) = match gated {
        Gated::No => rw_done,
        Gated::Counted => rw_done_counted,
        Gated::Barrier => rw_done_barrier,
    };
    let raw = c.raw();
    // SAFETY: `c` is live and uncompleted; the completion completes it.
    match unsafe { submit_rw(raw, &io, &rw, raw.cast(), end_io) } {
        Ok(()) => {
            io.keep();
            Ok(())
        }
        Err(_) => Err(c),
    }
}

/// `rw_done`, then the end of an IO `crate::barrier` counted.
///
/// # Safety
/// As `rw_done`.
unsafe extern "C" fn rw_done_counted(bio: *mut kb::bio) {
    // SAFETY: as `rw_done`, whose contract is this one's.
    unsafe { rw_done(bio) };
    crate::barrier::ended(Gated::Counted);
}

/// `rw_done`, then the end of an ORDERED IO `crate::barrier` held others for.
///
/// # Safety
/// As `rw_done`.
unsafe extern "C" fn rw_done_barrier(bio: *mut kb::bio) {
    // SAFETY: as `rw_done`, whose contract is this one's.
    unsafe { rw_done(bio) };
    crate::barrier::ended(Gated::Barrier);
}

/// Completion of the data bios of one command.
///
/// # Safety
/// The block layer's `bi_end_io`, called once for the last bio of a command's read or write, whose
/// `bi_private` is that command.
unsafe extern "C" fn rw_done(bio: *mut kb::bio) {
    // SAFETY: the block layer calls this once for our last bio.
    let (status, write, private) = unsafe { bio::finish(bio) };
    if status != 0 {
        err_ratelimited!("IO error: block status {} on {}\n", status, if write { "write" } else { "read" });
    }
    // SAFETY: `private` is the command submitted in `execute_rw` or
    // `execute_write_same`, not completed before.
    if let Some(cmd) = unsafe { Cmd::from_raw(private.cast()) } {
        // The use kept at submission ends with the bios.
        cmd.device().io_end();
        cmd.complete(io::from_blk_status(status, write));
    }
}

/// LIO's `execute_rw` for READ and WRITE: bios on the backing device, or the IO handed to the
/// primary.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device, and its data scatterlist of
/// `nents` entries.
unsafe extern "C" fn execute_rw(
    cmd: *mut b::se_cmd,
    sgl: *mut kb::scatterlist,
    nents: u32,
    dir: kb::dma_data_direction,
) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let write = dir == kb::dma_data_direction::DMA_TO_DEVICE;
    if write && c.device().readonly() {
        return WRITE_PROTECTED;
    }
    let Some(io) = bdev_of(&c) else {
        let op = if write { IoOp::Write } else { IoOp::Read };
        let sector = c.sectors(c.lba());
        // SAFETY: the command's scatterlist for this IO, valid until the
        // command completes.
        let sg = unsafe { DataSg::new(sgl, nents) };
        return to_peer(c, op, sector, Some(sg));
    };
    if nents == 0 && write && c.fua() {
        // A zero-length FUA write still asks for what is cached to be on
        // the medium.
        let r = io.bdev().flush(cmd.cast(), flush_done);
        return submitted(io, r);
    }
    let mut rw = Rw { sgl, nents, write };
    let mut io = io;
    if NODE.mode() == HaMode::SerializeOnly && nents != 0 {
        // Shared storage: ordered against the other node's IO first.
        match crate::serialize::rw(c, io, rw) {
            Ok(r) => return r,
            Err((_, i, r)) => (io, rw) = (i, r),
        }
    } else if NODE.mode() == HaMode::Proxy && nents != 0 {
        // This node does the IO of both: ORDERED tasks of either node are
        // ordered against the other's IO here.
        return match crate::barrier::local(c, io, rw) {
            Ok(()) => reason::NONE,
            Err(_) => reason::LUN_BUSY,
        };
    }
    // SAFETY: LIO's live command, completed by `rw_done`.
    let r = unsafe { submit_rw(cmd, &io, &rw, cmd.cast(), rw_done) };
    submitted(io, r)
}

/// A command whose IO this node cannot do because it does not hold the
/// backing device: in proxy mode the secondary hands the IO to the primary
/// (the command completes when the primary answers); otherwise the
/// initiator retries it as for an ALUA transition.
fn to_peer(c: Cmd, op: IoOp, sector: u64, sg: Option<DataSg>) -> b::sense_reason_t {
    if !c.device().ha().scsi.proxies() {
        return NOT_HELD;
    }
    let lun_id = c.device().ha().scsi.lun_id();
    let fua = op == IoOp::Write && c.fua();
    crate::forward::io(c, lun_id, op, fua, sector, sg);
    reason::NONE
}

/// The answer for a submission: once submitted, the bio completion ends the
/// use of the backing device; otherwise it ends here.
fn submitted(io: IoRef, r: Result) -> b::sense_reason_t {
    match r {
        Ok(()) => {
            io.keep();
            reason::NONE
        }
        Err(_) => reason::OUT_OF_RESOURCES,
    }
}

/// Completion of a cache flush for SYNCHRONIZE CACHE or a zero-length FUA write.
///
/// # Safety
/// The block layer's `bi_end_io`, called once for the flush bio, whose `bi_private` is the command.
unsafe extern "C" fn flush_done(bio: *mut kb::bio) {
    // SAFETY: the block layer calls this once for our flush bio.
    let (status, _, private) = unsafe { bio::finish(bio) };
    if status != 0 {
        err_ratelimited!("cache flush failed: block status {}\n", status);
    }
    // SAFETY: the command, not completed before.
    if let Some(cmd) = unsafe { Cmd::from_raw(private.cast()) } {
        cmd.device().io_end();
        cmd.complete(io::from_blk_status(status, true));
    }
}

/// Completion of the flush of a SYNCHRONIZE CACHE with IMMED (its command
/// already completed).
///
/// # Safety
/// The block layer's `bi_end_io`, called once for the flush bio, whose `bi_private` is the device
/// whose use of the backing device the flush keeps counted.
unsafe extern "C" fn immed_flush_done(bio: *mut kb::bio) {
    // SAFETY: the block layer calls this once for our flush bio.
    let (status, _, private) = unsafe { bio::finish(bio) };
    if status != 0 {
        err_ratelimited!("cache flush failed: block status {}\n", status);
    }
    // SAFETY: `private` is the device the flush was submitted for, alive:
    // it is not closed, let alone freed, while this use is counted.
    if let Some(d) = unsafe { private.cast::<Device>().as_ref() } {
        d.io_end();
    }
}

/// LIO's `execute_sync_cache`.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_sync_cache(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let Some(io) = bdev_of(&c) else { return to_peer(c, IoOp::Flush, 0, None) };
    let dev = io.bdev();
    let immed = c.cdb()[1] & 0x2 != 0;
    if !immed {
        return submitted(io, dev.flush(cmd.cast(), flush_done));
    }
    // IMMED: GOOD now, the flush runs on (a failure is only logged); its
    // completion ends the use of the backing device.
    let device: *const Device = c.device();
    c.complete(Completion::Good);
    if dev.flush(device.cast_mut().cast(), immed_flush_done).is_ok() {
        io.keep();
    }
    reason::NONE
}

/// LIO's `execute_unmap` for one UNMAP descriptor.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_unmap(cmd: *mut b::se_cmd, lba: u64, nolb: u64) -> b::sense_reason_t {
    // SAFETY: LIO passes a live command; it completes UNMAP itself.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    if c.device().readonly() {
        return WRITE_PROTECTED;
    }
    let Some(io) = bdev_of(&c) else {
        if !c.device().ha().scsi.proxies() {
            return NOT_HELD;
        }
        // Proxy mode: the primary deallocates; this descriptor waits for it
        // (LIO goes on with the next one, then completes the command).
        let lun_id = c.device().ha().scsi.lun_id();
        return match crate::forward::discard(lun_id, c.sectors(lba), c.sectors(nolb)) {
            Completion::Good => reason::NONE,
            Completion::Busy => reason::LUN_BUSY,
            Completion::Check(s) if s == Sense::ALUA_TRANSITIONING => NOT_HELD,
            Completion::Check(s) if s == Sense::INVALID_OPCODE => reason::UNSUPPORTED_SCSI_OPCODE,
            _ => reason::LUN_COMMUNICATION_FAILURE,
        };
    };
    let (sector, nr_sects) = (c.sectors(lba), c.sectors(nolb));
    let order = match shared_order(&c, sector, nr_sects) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let r = bio::discard(io.bdev(), sector, nr_sects);
    if let Some(t) = order {
        ticket::finish(t);
    }
    match r {
        Ok(()) => reason::NONE,
        Err(e) => {
            err_ratelimited!("discard of {} blocks at LBA {} failed: error {}\n", nolb, lba, e.to_errno());
            reason::LUN_COMMUNICATION_FAILURE
        }
    }
}

/// In mode 1 (shared storage), the order a WRITE SAME or UNMAP descriptor
/// of `c` over `nr_sects` sectors at `sector` runs under: it sleeps until
/// the LUN's primary admits it (see `crate::serialize::enter`). `Ok(None)`
/// in the other modes and when nothing can overlap it.
fn shared_order(c: &Cmd, sector: u64, nr_sects: u64) -> core::result::Result<Option<KBox<Ticket>>, b::sense_reason_t> {
    if NODE.mode() != HaMode::SerializeOnly {
        return Ok(None);
    }
    crate::serialize::enter(c, sector, nr_sects)
}

/// LIO's `execute_write_same`.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_write_same(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    if c.device().readonly() {
        return WRITE_PROTECTED;
    }
    let bs = c.block_size();
    let Some(io) = bdev_of(&c) else {
        if !c.device().ha().scsi.proxies() {
            return NOT_HELD;
        }
        // Proxy mode: the primary writes; the block goes with the request.
        let (sector, sectors) = (c.sectors(c.lba()), c.sectors(c.write_same_blocks()));
        let (lun_id, fua) = (c.device().ha().scsi.lun_id(), c.fua());
        let mut block = KVVec::new();
        match c.with_data(bs as usize, |d| block.extend_from_slice(d, GFP_KERNEL)) {
            Some(Ok(())) => {}
            Some(Err(_)) => return reason::LUN_BUSY,
            None => return reason::INVALID_CDB_FIELD,
        }
        crate::forward::write_same(c, lun_id, fua, sector, sectors, &block);
        return reason::NONE;
    };
    let dev = io.bdev();
    let (sgl, nents) = c.data_sg();
    let Some(seg) = bio::first_seg(sgl, nents).filter(|s| s.len() == bs) else {
        // One logical block of data in one segment, as iblock requires.
        return reason::INVALID_CDB_FIELD;
    };
    let blocks = c.write_same_blocks();
    let (sector, nr_sects) = (c.sectors(c.lba()), c.sectors(blocks));
    let zero = c.with_data(bs as usize, |d| io::all_zero(d)).unwrap_or(false);
    let order = match shared_order(&c, sector, nr_sects) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if zero {
        let done = match bio::zeroout(dev, sector, nr_sects) {
            Ok(()) => Completion::Good,
            Err(e) => {
                err_ratelimited!("write zeroes at LBA {} failed: error {}\n", c.lba(), e.to_errno());
                Completion::Check(Sense::WRITE_ERROR)
            }
        };
        if let Some(t) = order {
            ticket::finish(t);
        }
        c.complete(done);
        return reason::NONE;
    }
    let opf = if c.fua() { bio::OP_WRITE | bio::SYNC_WRITE | bio::FUA } else { bio::OP_WRITE | bio::SYNC_WRITE };
    let Some(t) = order else {
        return submitted(io, dev.submit(sector, opf, blocks, bio::repeat(seg, blocks), cmd.cast(), rw_done));
    };
    // The order ends with the bios (the ticket's completion completes the
    // command).
    ticket::submit_with(c, io, t, |io, private, end_io| {
        io.bdev().submit(sector, opf, blocks, bio::repeat(seg, blocks), private, end_io)
    });
    reason::NONE
}

/// Whether the command's IO must be done by the peer: proxy mode, and the
/// backing device is not held here.
fn needs_peer(c: &Cmd) -> bool {
    let scsi = &c.device().ha().scsi;
    if NODE.mode() == HaMode::SerializeOnly {
        // Shared storage: the primary compares and writes for both nodes.
        return scsi.pr_goes_to_peer();
    }
    scsi.proxies() && c.device().io_begin().is_none()
}

/// A COMPARE AND WRITE on a node that does not hold the backing device
/// (proxy mode): the primary compares and writes under its lock, so that
/// it is atomic against COMPARE AND WRITEs through either node. LIO's own
/// execution would compare here and write through the primary in two
/// steps, under this node's lock only.
fn caw_to_peer(c: Cmd) -> b::sense_reason_t {
    // First: LIO's callback, run when this command fails or completes,
    // would release the lock LIO's execution takes, never taken here.
    c.leave_lio_caw();
    if c.device().readonly() {
        return WRITE_PROTECTED;
    }
    let blocks = u64::from(c.caw_blocks());
    let len = blocks * u64::from(c.block_size());
    let Ok(len32) = u32::try_from(len) else { return reason::INVALID_CDB_FIELD };
    if len32 == 0 || len32 > MAX_CAW_BYTES {
        return reason::INVALID_CDB_FIELD;
    }
    let mut data = KVVec::new();
    match c.with_data(2 * len32 as usize, |d| data.extend_from_slice(d, GFP_KERNEL)) {
        Some(Ok(())) => {}
        Some(Err(_)) => return reason::LUN_BUSY,
        None => return reason::INVALID_CDB_FIELD,
    }
    let (sector, lun_id, fua) = (c.sectors(c.lba()), c.device().ha().scsi.lun_id(), c.fua());
    crate::forward::compare_and_write(c, lun_id, fua, sector, len32, data);
    reason::NONE
}

/// `exec_cmd_ops` of the `ha` backstore: read-only after build, shared by
/// every device.
struct ExecOps(core::cell::UnsafeCell<b::exec_cmd_ops>);

// SAFETY: never written after initialisation; LIO only reads it.
unsafe impl Sync for ExecOps {}

static EXEC_OPS: ExecOps = ExecOps(core::cell::UnsafeCell::new(b::exec_cmd_ops {
    execute_rw: Some(execute_rw),
    execute_sync_cache: Some(execute_sync_cache),
    execute_write_same: Some(execute_write_same),
    execute_unmap: Some(execute_unmap),
    execute_pr_out: None,
    execute_pr_in: None,
}));

/// Runs first for every command of an `ha` device: the backstore's own
/// unit attention, ALUA and reservation checks (LIO's are off under
/// PASSTHROUGH_ALUA/PGR), then what the parser chose.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device, whose `priv` holds the
/// function `parse_cdb` put aside.
unsafe extern "C" fn gate(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let Some(run) = c.stashed_exec() else { return reason::LUN_COMMUNICATION_FAILURE };
    let state = if completed_by_us(c.cdb()) { run::OURS } else { run::LIO };
    c.run_state().store(state as *mut c_void, Ordering::Release);
    let mut isid = [0u8; ISID_LEN];
    let verdict = c.device().inner.scsi.admit(c.nexus(&mut isid).as_ref(), c.cdb());
    let caw = c.cdb().first() == Some(&op::COMPARE_AND_WRITE);
    match verdict {
        Ok(()) if caw && needs_peer(&c) => caw_to_peer(c),
        Ok(()) => {
            // SAFETY: the function LIO's parser chose for this command.
            let r = unsafe { run(cmd) };
            if r != reason::NONE {
                // LIO ends the command with this reason (it is still live:
                // nothing completed it); an abort mark is dropped.
                c.end_run();
            }
            r
        }
        Err(done) => {
            if caw {
                // LIO's callback would release a lock never taken.
                c.leave_lio_caw();
            }
            c.complete(done);
            reason::NONE
        }
    }
}

/// Parses a CDB with LIO's SBC parser and our data-path operations, takes
/// over the SPC commands the backstore owns, and gates execution.
///
/// # Safety
/// Called by LIO with a live command of an `ha` device while it is parsed.
pub(crate) unsafe extern "C" fn parse_cdb(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live command, not completed during parsing.
    let c = unsafe { Cmd::from_raw(cmd) };
    if c.as_ref().is_some_and(|c| io::caw_without_blocks(c.cdb(), c.data_length())) {
        return reason::INVALID_CDB_FIELD;
    }
    // SAFETY: as above; the ops table is static.
    let r = unsafe { b::sbc_parse_cdb(cmd, EXEC_OPS.0.get()) };
    if r != reason::NONE {
        return r;
    }
    if let Some(c) = c {
        if let Some(f) = super::spc::emulation(c.cdb()) {
            c.set_exec(f);
        }
        c.wrap_exec(gate);
    }
    reason::NONE
}
