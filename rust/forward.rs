// SPDX-License-Identifier: GPL-2.0

//! Commands this node hands to the peer: a PERSISTENT RESERVE OUT received
//! by the secondary is executed by the primary (issue 5), and in proxy mode
//! (`ha_mode=2`, issue 6) the secondary's block IO is done by the primary,
//! the data travelling with it.
//!
//! A command sent to the peer is parked here under a tag until the peer's
//! answer (`PrOutDone`, `IoDone`) completes it. The interlink thread takes
//! the outgoing messages ([`take_outbox`]) and fails what is parked when the
//! link goes down ([`fail_all`]) or an answer is overdue ([`expire`]): a
//! parked command always completes, with ALUA TRANSITIONING sense (04h/0Ah,
//! the initiator retries) when the peer did not answer. Whether the peer
//! executed a command whose answer was lost is unknown; for PR the next
//! snapshot from the primary says what holds, and a write retried by the
//! initiator writes the same data again.
//!
//! Tags are 31-bit: IoData the peer sends for one of our IoReqs (read data)
//! carries the tag with bit 31 set, so it cannot be taken for write data of
//! the peer's own IoReqs, whose tags come from the peer's counter.

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    new_spinlock,
    prelude::*,
    sync::{Arc, Completion as Done, SpinLock},
};

use crate::core_logic::scsi::{
    io::Completion,
    pr::{self, PrError, ProutRequest},
    sense::Sense,
};
use crate::core_logic::scsi::io;
use crate::core_logic::wire::msg::{IoAbort, IoData, IoDone, IoOp, IoReq, IoStatus, Message, PortName, PrOut, PrOutDone};
use crate::scsi::NexusKey;
use crate::lio::cmd::{Cmd, DataSg};
use crate::sys;

/// Commands parked at once; more are answered BUSY.
const MAX_PARKED: usize = 256;
/// Data bytes of forwarded IO in flight at once; more is answered BUSY.
const MAX_IO_BYTES_IN_FLIGHT: usize = 32 << 20;
/// How long the primary may hold back the answer to a PREEMPT AND ABORT
/// while the aborted commands end (on either node).
pub(crate) const ABORT_WAIT_MS: u64 = 20_000;
/// How long the peer has to answer a PR OUT: beyond [`ABORT_WAIT_MS`].
const PR_ANSWER_MS: u64 = ABORT_WAIT_MS + 5000;
/// How long the peer has to answer an IO (it waits behind other IO).
const IO_ANSWER_MS: u64 = 15000;
/// IOs this node handed to the peer (proxy mode, secondary).
pub(crate) static PROXIED_OUT: AtomicU64 = AtomicU64::new(0);
/// IOs this node did for the peer (proxy mode, primary).
pub(crate) static PROXIED_IN: AtomicU64 = AtomicU64::new(0);
/// IoAborts this node sent for its forwarded IO (ABORT TASK, LUN RESET).
pub(crate) static ABORTS_TO_PEER: AtomicU64 = AtomicU64::new(0);
/// The peer's IOs this node dropped on its IoAbort before they ran.
pub(crate) static ABORTED_FOR_PEER: AtomicU64 = AtomicU64::new(0);

/// Bit 31 of an IoData tag: read data answering one of our IoReqs.
pub(crate) const ANSWER_BIT: u32 = 1 << 31;

/// A forwarded IO waiting for its answer.
struct IoWait {
    op: IoOp,
    /// Where a read's data goes.
    sg: Option<DataSg>,
    /// A read's data received so far (capacity: the whole IO).
    buf: KVVec<u8>,
    len: usize,
}

/// A caller blocked until the peer answers (an UNMAP descriptor: LIO
/// executes those one by one and completes the command itself).
#[pin_data]
pub(crate) struct Waiter {
    #[pin]
    done: Done,
    #[pin]
    result: SpinLock<Option<Completion>>,
}

/// Who learns the outcome of a parked request.
enum Owner {
    Cmd(Cmd),
    Waiter(Arc<Waiter>),
}

impl Owner {
    fn finish(self, c: Completion) {
        match self {
            Owner::Cmd(cmd) => cmd.complete(c),
            Owner::Waiter(w) => {
                *w.result.lock() = Some(c);
                w.done.complete_all();
            }
        }
    }
}

struct Parked {
    tag: u32,
    lun_id: u32,
    deadline: u64,
    owner: Owner,
    /// `None` for a PR OUT.
    io: Option<IoWait>,
}

/// A message for the peer, with the data that follows it (IoReq of a
/// write; empty otherwise).
pub(crate) struct Outgoing {
    pub(crate) msg: Message,
    pub(crate) data: KVVec<u8>,
}

struct Forward {
    parked: KVec<Parked>,
    outbox: KVec<Outgoing>,
    next_tag: u32,
    /// Data bytes of the parked IO.
    io_bytes: usize,
    /// The interlink is up: messages queued now will be sent.
    online: bool,
}

kernel::sync::global_lock! {
    // SAFETY: `init` runs in module init before LIO can call the backend.
    unsafe(uninit) static FORWARD: SpinLock<Forward> =
        Forward { parked: KVec::new(), outbox: KVec::new(), next_tag: 0, io_bytes: 0, online: false };
}

/// Prepares the tables; call once, at module load.
pub(crate) fn init() {
    // SAFETY: called once from module init, before any command.
    unsafe { FORWARD.init() };
}

/// Owned by the module: dropping it (at unload, after the interlink thread
/// has stopped) gives back the tables' buffers.
pub(crate) struct Tables;

impl Drop for Tables {
    fn drop(&mut self) {
        release();
    }
}

/// Gives back the tables' buffers (nothing is parked then: no device is
/// left).
fn release() {
    fail_all();
    let mut f = FORWARD.lock();
    let outbox = core::mem::take(&mut f.outbox);
    let parked = core::mem::take(&mut f.parked);
    drop(f);
    drop(outbox);
    drop(parked);
    // The peer's IO done here that the interlink thread did not answer.
    crate::lio::bufio::drain();
    crate::serialize::drain();
    crate::barrier::drain();
}

/// The link came up (`true`) or went down (`false`; what is parked fails).
pub(crate) fn set_online(online: bool) {
    FORWARD.lock().online = online;
    if !online {
        fail_all();
    }
    crate::serialize::set_online(online);
}

/// Parks `cmd` under a new tag and queues `msg` (its tag set by `tag_of`)
/// with `data` for the peer; the command completes when the answer comes or
/// the link fails. Refused as transitioning while the link is down, BUSY
/// when too much waits already.
fn park(
    owner: Owner,
    lun_id: u32,
    msg: impl FnOnce(u32) -> Message,
    data: KVVec<u8>,
    io: Option<IoWait>,
    answer_ms: u64,
) {
    let bytes = io.as_ref().map_or(0, |w| w.len);
    let io_counted = io.is_some();
    let refused = {
        let mut f = FORWARD.lock();
        if !f.online {
            Some(Completion::Check(Sense::ALUA_TRANSITIONING))
        } else if f.parked.len() >= MAX_PARKED
            || (bytes > 0 && f.io_bytes.saturating_add(bytes) > MAX_IO_BYTES_IN_FLIGHT)
        {
            Some(Completion::Busy)
        } else {
            f.next_tag = f.next_tag.wrapping_add(1) & !ANSWER_BIT;
            let tag = f.next_tag;
            let deadline = sys::now_ms().saturating_add(answer_ms);
            // Both pushes or neither: room is made before anything is queued.
            let room = f.parked.reserve(1, GFP_ATOMIC).is_ok() && f.outbox.reserve(1, GFP_ATOMIC).is_ok();
            if room {
                let p = Parked { tag, lun_id, deadline, owner, io };
                let o = Outgoing { msg: msg(tag), data };
                // Cannot fail: room was reserved above.
                let (r1, r2) = (f.parked.push(p, GFP_ATOMIC), f.outbox.push(o, GFP_ATOMIC));
                debug_assert!(r1.is_ok() && r2.is_ok());
                f.io_bytes += bytes;
                drop(f);
                if io_counted {
                    PROXIED_OUT.fetch_add(1, Ordering::Relaxed);
                }
                sys::link_kick();
                return;
            }
            Some(Completion::Busy)
        }
    };
    if let Some(c) = refused {
        owner.finish(c);
    }
}

/// Sends `req` (its tag is set here) to the primary and waits for the
/// answer, or until the link fails: at most [`PR_ANSWER_MS`]. The primary
/// answers a PREEMPT AND ABORT once the aborted commands have ended.
pub(crate) fn pr_out(req: PrOut) -> Completion {
    let lun_id = req.lun_id;
    park_and_wait(lun_id, |tag| Message::PrOut(PrOut { tag, ..req }), None, PR_ANSWER_MS)
}

/// Parks a waiter for `msg` (see [`park`]) and sleeps until it is
/// answered, failed or overdue; the outcome.
fn park_and_wait(lun_id: u32, msg: impl FnOnce(u32) -> Message, io: Option<IoWait>, answer_ms: u64) -> Completion {
    let w = match Arc::pin_init(
        pin_init!(Waiter { done <- Done::new(), result <- new_spinlock!(None) }),
        GFP_KERNEL,
    ) {
        Ok(w) => w,
        Err(_) => return Completion::Busy,
    };
    park(Owner::Waiter(w.clone()), lun_id, msg, KVVec::new(), io, answer_ms);
    w.done.wait_for_completion();
    // Set before `done` completed.
    let r = *w.result.lock();
    r.unwrap_or(Completion::Check(Sense::ALUA_TRANSITIONING))
}

/// Hands the block IO of `cmd` to the primary (proxy mode): `op` at
/// 512-byte `sector` on the data of `sg` (none for a flush).
pub(crate) fn io(cmd: Cmd, lun_id: u32, op: IoOp, fua: bool, sector: u64, sg: Option<DataSg>) {
    let (ordered, head) = (cmd.ordered(), cmd.head_of_queue());
    if ordered {
        crate::serialize::ORDER_BARRIERS.fetch_add(1, Ordering::Relaxed);
    }
    let len = sg.as_ref().map_or(0, DataSg::len);
    let Ok(len32) = u32::try_from(len) else {
        cmd.complete(Completion::Check(Sense::INVALID_FIELD_IN_CDB));
        return;
    };
    if op != IoOp::Flush && len == 0 {
        // Nothing to move (LIO completes zero-length IO before this).
        cmd.complete(Completion::Good);
        return;
    }
    // Allocated here, outside the lock: the IO path runs in process context.
    let mut data = KVVec::new();
    let mut rbuf = KVVec::new();
    let room = match op {
        IoOp::Write => data.resize(len, 0, GFP_KERNEL).is_ok(),
        IoOp::Read => rbuf.reserve(len, GFP_KERNEL).is_ok(),
        // No data (the range ops go through `write_same` and `discard`,
        // COMPARE AND WRITE through `compare_and_write`).
        IoOp::Flush | IoOp::Discard | IoOp::WriteZeroes | IoOp::WriteSame | IoOp::CompareAndWrite => true,
    };
    if !room {
        cmd.complete(Completion::Busy);
        return;
    }
    if let (IoOp::Write, Some(sg)) = (op, sg.as_ref()) {
        if sg.copy_out(&mut data) != len {
            cmd.complete(Completion::Check(Sense::WRITE_ERROR));
            return;
        }
    }
    let sg = if op == IoOp::Read { sg } else { None };
    let wait = IoWait { op, sg, buf: rbuf, len };
    let req = move |tag| Message::IoReq(IoReq { tag, lun_id, op, fua, ordered, head, sector, len: len32 });
    park(Owner::Cmd(cmd), lun_id, req, data, Some(wait), IO_ANSWER_MS);
}

/// Hands a WRITE SAME to the primary (proxy mode): `block` (one logical
/// block) written to each block of `sectors` sectors at `sector`, or, when
/// `block` is all zeroes, zeroes written there.
pub(crate) fn write_same(cmd: Cmd, lun_id: u32, fua: bool, sector: u64, sectors: u64, block: &[u8]) {
    let Ok(n) = u32::try_from(sectors) else {
        // LIO bounds WRITE SAME by max_write_same_len (≤ 0xFFFF blocks).
        cmd.complete(Completion::Check(Sense::INVALID_FIELD_IN_CDB));
        return;
    };
    let (op, len) = if io::all_zero(block) { (IoOp::WriteZeroes, 0) } else { (IoOp::WriteSame, block.len()) };
    let mut data = KVVec::new();
    if data.extend_from_slice(block.get(..len).unwrap_or(&[]), GFP_KERNEL).is_err() {
        cmd.complete(Completion::Busy);
        return;
    }
    let wait = IoWait { op, sg: None, buf: KVVec::new(), len };
    let req = move |tag| Message::IoReq(IoReq { tag, lun_id, op, fua, ordered: false, head: false, sector, len: n });
    park(Owner::Cmd(cmd), lun_id, req, data, Some(wait), IO_ANSWER_MS);
}

/// Hands a COMPARE AND WRITE to the primary (proxy mode): `data` holds
/// the `len` bytes to compare with those at `sector`, then the `len` bytes
/// to write there if they are equal.
pub(crate) fn compare_and_write(cmd: Cmd, lun_id: u32, fua: bool, sector: u64, len: u32, data: KVVec<u8>) {
    if data.len() != 2 * len as usize {
        cmd.complete(Completion::Check(Sense::INVALID_FIELD_IN_CDB));
        return;
    }
    let op = IoOp::CompareAndWrite;
    let wait = IoWait { op, sg: None, buf: KVVec::new(), len: data.len() };
    let req = move |tag| Message::IoReq(IoReq { tag, lun_id, op, fua, ordered: false, head: false, sector, len });
    park(Owner::Cmd(cmd), lun_id, req, data, Some(wait), IO_ANSWER_MS);
}

/// Has the primary deallocate `sectors` sectors at `sector` (proxy mode,
/// one UNMAP descriptor) and waits for its answer: at most the answer
/// deadline, as the interlink thread fails what is overdue or what was
/// sent on a link that went down.
pub(crate) fn discard(lun_id: u32, sector: u64, sectors: u64) -> Completion {
    let Ok(n) = u32::try_from(sectors) else {
        // LIO bounds a descriptor by max_unmap_lba_count (≤ 1 Mi blocks).
        return Completion::Check(Sense::INVALID_FIELD_IN_CDB);
    };
    let wait = IoWait { op: IoOp::Discard, sg: None, buf: KVVec::new(), len: 0 };
    let req = move |tag| Message::IoReq(IoReq { tag, lun_id, op: IoOp::Discard, fua: false, ordered: false, head: false, sector, len: n });
    park_and_wait(lun_id, req, Some(wait), IO_ANSWER_MS)
}

/// The PrOut that asks the primary to execute a PERSISTENT RESERVE OUT
/// from nexus `key` (checked here as the primary would, so that only
/// valid requests travel).
pub(crate) fn pr_request(lun_id: u32, key: Option<&NexusKey<'_>>, cdb: &[u8], params: &[u8]) -> Result<PrOut, PrError> {
    let req = ProutRequest::parse(cdb, params)?;
    let no_room = PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES);
    let k = key.ok_or(no_room)?;
    let port = PortName::new(k.proto, k.initiator, k.isid).ok_or(no_room)?;
    let (action, res_type) = req.wire_codes();
    Ok(PrOut { tag: 0, lun_id, rel_port: k.rel_port, action, res_type, key: req.key, sa_key: req.sa_key, port })
}

/// Queues `msg` (no data) for the peer; `false` while the link is down
/// or without memory.
pub(crate) fn queue(msg: Message) -> bool {
    let queued = {
        let mut f = FORWARD.lock();
        f.online && f.outbox.push(Outgoing { msg, data: KVVec::new() }, GFP_ATOMIC).is_ok()
    };
    if queued {
        sys::link_kick();
    }
    queued
}

/// Moves the queued messages into `out` (emptied first).
pub(crate) fn take_outbox(out: &mut KVec<Outgoing>) {
    let mut f = FORWARD.lock();
    core::mem::swap(&mut f.outbox, out);
    f.outbox.clear();
}

/// Completes the command the peer answered; `false` if no command waits
/// for that tag (a late or invented answer).
pub(crate) fn done(d: &PrOutDone) -> bool {
    let Some(p) = take(|p| p.tag == d.tag && p.lun_id == d.lun_id && p.io.is_none()) else {
        return false;
    };
    let c = match pr::outcome_from_wire(d.status, d.sense) {
        Ok(()) => Completion::Good,
        Err(PrError::Conflict) => Completion::ReservationConflict,
        Err(PrError::Check(s)) => Completion::Check(s),
    };
    p.owner.finish(c);
    true
}

/// Read data from the peer for one of our IoReqs (`d.tag` has
/// [`ANSWER_BIT`]); `false` if no read waits for it at that offset (the
/// read then fails when its IoDone comes: it lacks data).
pub(crate) fn io_data(d: &IoData, data: &[u8]) -> bool {
    let tag = d.tag & !ANSWER_BIT;
    let mut f = FORWARD.lock();
    let Some(w) = f.parked.iter_mut().find(|p| p.tag == tag).and_then(|p| p.io.as_mut()) else {
        return false;
    };
    let fits = w.op == IoOp::Read && d.offset as usize == w.buf.len() && w.buf.len() + data.len() <= w.len;
    // No allocation: the capacity was reserved for the whole read.
    fits && w.buf.extend_from_slice(data, GFP_ATOMIC).is_ok()
}

/// Completes the IO the peer answered; `false` if none waits for that tag.
pub(crate) fn io_done(d: &IoDone) -> bool {
    let Some(p) = take(|p| p.tag == d.tag && p.lun_id == d.lun_id && p.io.is_some()) else {
        return false;
    };
    let Parked { owner, io: Some(w), lun_id, .. } = p else { return false };
    let write = w.op != IoOp::Read;
    let c = match d.status {
        IoStatus::Ok if w.op == IoOp::Read => match &w.sg {
            Some(sg) if w.buf.len() == w.len && sg.copy_in(&w.buf) == w.len => Completion::Good,
            _ => {
                pr_err!("LUN {}: the primary's read data was incomplete ({} of {} bytes)\n", lun_id, w.buf.len(), w.len);
                io::from_blk_status(io::blk::IOERR, false)
            }
        },
        IoStatus::Ok => Completion::Good,
        IoStatus::Blk(v) => io::from_blk_status(v, write),
        IoStatus::NotHeld => Completion::Check(Sense::ALUA_TRANSITIONING),
        // LIO aborted the command (the IoAbort's cause): the status is not
        // sent; BUSY otherwise, the initiator retries.
        IoStatus::Busy | IoStatus::Aborted => Completion::Busy,
        // MISCOMPARE, with the offset of the first differing byte in
        // INFORMATION (SBC-4 §5.3), as LIO reports its own.
        IoStatus::Miscompare(off) if w.op == IoOp::CompareAndWrite => {
            Completion::Check(Sense::MISCOMPARE.with_info(u64::from(off)))
        }
        IoStatus::Miscompare(_) => {
            pr_err!("LUN {}: the primary answered miscompare to an IO that compares nothing\n", lun_id);
            io::from_blk_status(io::blk::IOERR, write)
        }
    };
    owner.finish(c);
    true
}

/// LIO aborted `cmd` (ABORT TASK, LUN RESET): if its IO was handed to
/// the peer, tells the peer (IoAbort), which drops the IO if it has not
/// started; the command stays parked until the answer (IoDone) or the
/// usual limits end it, so it never completes while the peer may still
/// write. Whether it was one of ours.
pub(crate) fn abort(cmd: *mut crate::lio::bindings::se_cmd) -> bool {
    let found = {
        let f = FORWARD.lock();
        f.parked
            .iter()
            .find(|p| p.io.is_some() && matches!(&p.owner, Owner::Cmd(c) if c.as_raw() == cmd))
            .map(|p| (p.tag, p.lun_id))
    };
    let Some((tag, lun_id)) = found else { return false };
    if queue(Message::IoAbort(IoAbort { tag, lun_id })) {
        ABORTS_TO_PEER.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Fails the commands whose answer is overdue; returns how many. Also
/// moves the ordering of shared-storage IO on (mode 1).
pub(crate) fn expire() -> usize {
    crate::serialize::pump();
    let now = sys::now_ms();
    let mut n = crate::serialize::expire(now);
    while let Some(p) = take(|p| p.deadline <= now) {
        let what = if p.io.is_some() { "IO" } else { "PERSISTENT RESERVE OUT" };
        pr_warn!("LUN {}: no answer from the peer for a forwarded {}: failed as transitioning\n", p.lun_id, what);
        p.owner.finish(Completion::Check(Sense::ALUA_TRANSITIONING));
        n += 1;
    }
    n
}

/// Fails every parked command (the link is down).
pub(crate) fn fail_all() {
    while let Some(p) = take(|_| true) {
        p.owner.finish(Completion::Check(Sense::ALUA_TRANSITIONING));
    }
    FORWARD.lock().outbox.clear();
}

/// Removes the first parked command matching `f`; it is completed by the
/// caller, outside the lock.
fn take(f: impl Fn(&Parked) -> bool) -> Option<Parked> {
    let mut g = FORWARD.lock();
    let i = g.parked.iter().position(f)?;
    let p = g.parked.remove(i).ok()?;
    let bytes = p.io.as_ref().map_or(0, |w| w.len);
    g.io_bytes = g.io_bytes.saturating_sub(bytes);
    Some(p)
}

/// How many commands wait for the peer.
pub(crate) fn parked() -> usize {
    FORWARD.lock().parked.len()
}

