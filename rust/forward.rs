// SPDX-License-Identifier: GPL-2.0

//! Commands this node hands to the peer (issue 5: a PERSISTENT RESERVE OUT
//! received by the secondary is executed by the primary) and the messages
//! that carry them.
//!
//! A command sent to the peer is parked here under a tag until the peer's
//! answer (`PrOutDone`) completes it. The interlink thread takes the
//! outgoing messages ([`take_outbox`]) and fails what is parked when the
//! link goes down ([`fail_all`]) or an answer is overdue ([`expire`]): a
//! parked command always completes, with ALUA TRANSITIONING sense (04h/0Ah,
//! the initiator retries) when the peer did not answer. Whether the peer
//! executed a command whose answer was lost is unknown; the next PR
//! snapshot from the primary says what holds.

use kernel::prelude::*;

use crate::core_logic::scsi::{
    io::Completion,
    pr::{self, PrError, ProutRequest},
    sense::Sense,
};
use crate::core_logic::wire::msg::{Message, PortName, PrOut, PrOutDone};
use crate::scsi::NexusKey;
use crate::lio::cmd::Cmd;
use crate::sys;

/// Commands parked at once; more are answered BUSY.
const MAX_PARKED: usize = 256;
/// How long the peer has to answer.
const ANSWER_MS: u64 = 5000;

struct Parked {
    tag: u32,
    lun_id: u32,
    deadline: u64,
    cmd: Cmd,
}

struct Forward {
    parked: KVec<Parked>,
    outbox: KVec<Message>,
    next_tag: u32,
    /// The interlink is up: messages queued now will be sent.
    online: bool,
}

kernel::sync::global_lock! {
    // SAFETY: `init` runs in module init before LIO can call the backend.
    unsafe(uninit) static FORWARD: SpinLock<Forward> =
        Forward { parked: KVec::new(), outbox: KVec::new(), next_tag: 0, online: false };
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
}

/// The link came up (`true`) or went down (`false`; what is parked fails).
pub(crate) fn set_online(online: bool) {
    FORWARD.lock().online = online;
    if !online {
        fail_all();
    }
}

/// Sends `req` (its tag is set here) to the primary for `cmd`, which
/// completes when the answer comes or the link fails.
pub(crate) fn pr_out(cmd: Cmd, mut req: PrOut) {
    let refused = {
        let mut f = FORWARD.lock();
        if !f.online {
            Some(Completion::Check(Sense::ALUA_TRANSITIONING))
        } else if f.parked.len() >= MAX_PARKED {
            Some(Completion::Busy)
        } else {
            f.next_tag = f.next_tag.wrapping_add(1);
            req.tag = f.next_tag;
            let deadline = sys::now_ms().saturating_add(ANSWER_MS);
            // Both pushes or neither: room is made before anything is queued.
            let room = f.parked.reserve(1, GFP_ATOMIC).is_ok() && f.outbox.reserve(1, GFP_ATOMIC).is_ok();
            if room {
                let p = Parked { tag: req.tag, lun_id: req.lun_id, deadline, cmd };
                // Cannot fail: room was reserved above.
                let (r1, r2) = (f.parked.push(p, GFP_ATOMIC), f.outbox.push(Message::PrOut(req), GFP_ATOMIC));
                debug_assert!(r1.is_ok() && r2.is_ok());
                return;
            }
            Some(Completion::Busy)
        }
    };
    if let Some(c) = refused {
        cmd.complete(c);
    }
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

/// Moves the queued messages into `out` (emptied first).
pub(crate) fn take_outbox(out: &mut KVec<Message>) {
    let mut f = FORWARD.lock();
    core::mem::swap(&mut f.outbox, out);
    f.outbox.clear();
}

/// Completes the command the peer answered; `false` if no command waits
/// for that tag (a late or invented answer).
pub(crate) fn done(d: &PrOutDone) -> bool {
    let Some(p) = take(|p| p.tag == d.tag && p.lun_id == d.lun_id) else {
        return false;
    };
    let c = match pr::outcome_from_wire(d.status, d.sense) {
        Ok(()) => Completion::Good,
        Err(PrError::Conflict) => Completion::ReservationConflict,
        Err(PrError::Check(s)) => Completion::Check(s),
    };
    p.cmd.complete(c);
    true
}

/// Fails the commands whose answer is overdue; returns how many.
pub(crate) fn expire() -> usize {
    let now = sys::now_ms();
    let mut n = 0;
    while let Some(p) = take(|p| p.deadline <= now) {
        pr_warn!("LUN {}: no answer from the peer for a forwarded PERSISTENT RESERVE OUT: failed as transitioning\n", p.lun_id);
        p.cmd.complete(Completion::Check(Sense::ALUA_TRANSITIONING));
        n += 1;
    }
    n
}

/// Fails every parked command (the link is down).
pub(crate) fn fail_all() {
    while let Some(p) = take(|_| true) {
        p.cmd.complete(Completion::Check(Sense::ALUA_TRANSITIONING));
    }
    FORWARD.lock().outbox.clear();
}

/// Removes the first parked command matching `f`; it is completed by the
/// caller, outside the lock.
fn take(f: impl Fn(&Parked) -> bool) -> Option<Parked> {
    let mut g = FORWARD.lock();
    let i = g.parked.iter().position(f)?;
    g.parked.remove(i).ok()
}

/// How many commands wait for the peer.
pub(crate) fn parked() -> usize {
    FORWARD.lock().parked.len()
}

