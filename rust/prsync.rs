// SPDX-License-Identifier: GPL-2.0

//! Persistent reservations across the pair (issue 5, requirements 2 and 4),
//! run by the interlink thread for one connection.
//!
//! The primary of a LUN owns its PR state. Whenever that state's version
//! differs from the one last sent (at link up: always), the primary sends a
//! snapshot (PrBegin, PrReg..., PrEnd) and the secondary replaces its copy
//! with it, so PR IN and reservation checks on the secondary see the
//! primary's state. A PR OUT received by the secondary is forwarded as
//! PrOut (see `crate::forward`); the primary executes it for that I_T
//! nexus, sends the new snapshot and then PrOutDone, so the secondary has
//! the new state before it completes the command.
//!
//! PREEMPT AND ABORT aborts the preempted nexuses' commands on both nodes
//! before the PR OUT completes: each node marks the commands it executes
//! for them (they end with TASK ABORTED once their IO has ended, see
//! `Device::abort_commands`). The primary sends AbortNexus for the nexuses
//! logged in through the secondary, which answers AbortDone once those
//! commands have ended; a PR OUT the secondary forwarded is answered only
//! after the primary's own aborted commands have ended, and the secondary
//! waits for its own before it completes the command.
//!
//! A LOGICAL UNIT RESET on either node aborts the LUN's commands on the
//! other too (AbortLun, sent after the reset's UaAll): they end as the
//! preempted ones do, and the other node answers AbortDone once they have
//! ended; the reset completes after that (see `wait_peer_reset`).

use kernel::prelude::*;

use crate::configfs::Core;
use crate::core_logic::control::Role;
use crate::core_logic::link::LinkError;
use crate::core_logic::scsi::{
    pr::{self, PrError, ProutRequest, SnapshotBuilder},
    sense::Sense,
};
use crate::core_logic::wire::msg::{AbortDone, Message, PrOut, PrOutDone};
use crate::configfs::NODE;
use crate::core_logic::scsi::alua::Link;
use crate::lio::Device;
use crate::scsi::{Aborts, NexusKey, Scsi};
use crate::{forward, lio, sys};

/// Runs `f` on the SCSI state of the LUN with HA identity `lun_id`.
fn with_lun<R>(lun_id: u32, f: impl FnOnce(&Scsi) -> R) -> Option<R> {
    lio::with_devices(|devs| {
        let d = devs.iter().find(|d| d.device().ha().scsi.lun_id() == lun_id)?;
        Some(f(&d.device().ha().scsi))
    })
}

/// Runs `f` on the device of the LUN with HA identity `lun_id`.
fn with_dev<R>(lun_id: u32, f: impl FnOnce(&Device) -> R) -> Option<R> {
    lio::with_devices(|devs| {
        let d = devs.iter().find(|d| d.device().ha().scsi.lun_id() == lun_id)?;
        Some(f(d.device()))
    })
}

/// After a PR OUT that aborted commands (`aborts`; the local ones already
/// marked): waits until this node's aborted commands of `dev` have ended
/// and, if the peer was asked to abort some, until it answered or the
/// link dropped; at most [`forward::ABORT_WAIT_MS`]. Process context.
pub(crate) fn wait_aborted(dev: &Device, aborts: &Aborts) {
    let deadline = sys::now_ms().saturating_add(forward::ABORT_WAIT_MS);
    let left = dev.wait_aborts(deadline);
    let scsi = &dev.ha().scsi;
    let mut unanswered = false;
    if let Some(token) = aborts.peer {
        sys::link_kick();
        while !scsi.abort_answered(token) && NODE.link() == Link::Online {
            if sys::now_ms() >= deadline {
                unanswered = true;
                break;
            }
            sys::sleep_ms(2);
        }
    }
    if left > 0 || unanswered {
        pr_warn!(
            "LUN {}: PREEMPT AND ABORT: {} aborted commands still running here{} after {} ms; the PR OUT completes\n",
            scsi.lun_id(),
            left,
            if unanswered { ", the peer has not answered" } else { "" },
            forward::ABORT_WAIT_MS
        );
    }
}

/// After a LUN RESET here whose UaAll and AbortLun went to the peer
/// (`token`, see `Scsi::note_reset`): waits until the peer answered, the
/// link went down, or [`forward::ABORT_WAIT_MS`]; whether it answered.
/// Process context.
pub(crate) fn wait_peer_reset(scsi: &Scsi, token: u32) -> bool {
    let deadline = sys::now_ms().saturating_add(forward::ABORT_WAIT_MS);
    sys::link_kick();
    while !scsi.abort_answered(token) {
        if NODE.link() != Link::Online || sys::now_ms() >= deadline {
            return false;
        }
        sys::sleep_ms(1);
    }
    true
}

/// A message held back until the LUN's aborted commands have ended here.
struct Held {
    lun_id: u32,
    deadline: u64,
    msg: Message,
}

/// One connection's PR sync state.
pub(crate) struct PrSync {
    /// The snapshot being received.
    builder: KBox<SnapshotBuilder>,
    /// `builder` holds a snapshot being received.
    building: bool,
    /// (lun_id, version) of the last snapshot sent per LUN.
    sent: KVec<(u32, u32)>,
    /// Answers to the peer's PrOut and AbortNexus, sent after the
    /// snapshots once the aborted commands of their LUN have ended here.
    replies: KVec<Held>,
    /// One snapshot's messages (room for the largest).
    scratch: KVVec<Message>,
}

impl PrSync {
    /// Fresh state; the snapshot buffer is allocated here, not under a lock.
    pub(crate) fn new() -> Result<PrSync> {
        Ok(PrSync {
            builder: KBox::new(SnapshotBuilder::EMPTY, GFP_KERNEL)?,
            building: false,
            sent: KVec::new(),
            replies: KVec::new(),
            scratch: KVVec::with_capacity(pr::MAX_REGISTRANTS + 2, GFP_KERNEL)?,
        })
    }

    /// A PR message from the peer.
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn inbound(&mut self, m: &Message) {
        match m {
            Message::PrBegin(b) => {
                self.building = false;
                // The peer's LunState saying it is primary may still wait in
                // the inventory (applied after this batch): being secondary
                // here is what counts.
                if with_lun(b.lun_id, |s| s.local_role()) != Some(Role::Secondary) {
                    refuse(b.lun_id, "a PR snapshot from the peer while this node is primary for the LUN");
                    return;
                }
                match self.builder.restart(b.lun_id, b.snapshot, b.generation, b.count, b.res_type, b.holder) {
                    Ok(()) => self.building = true,
                    Err(e) => pr_err!("LUN {}: peer's {}: ignored\n", b.lun_id, Core(e)),
                }
            }
            Message::PrReg(g) => {
                if !self.building {
                    return;
                }
                let sb = &mut self.builder;
                let r = match with_lun(g.lun_id, |s| s.map_nexus(&g.port, g.rel_port)).flatten() {
                    Some(n) => sb.add(g.lun_id, g.snapshot, g.index, n, g.key).map_err(|e| pr_err!("LUN {}: peer's {}: ignored\n", g.lun_id, Core(e))),
                    None => {
                        pr_err!("LUN {}: no room for the peer's registrant {}: PR snapshot ignored\n", g.lun_id, g.index);
                        Err(())
                    }
                };
                if r.is_err() {
                    self.building = false;
                }
            }
            Message::PrEnd(lun_id, snapshot) => {
                if !core::mem::take(&mut self.building) {
                    return;
                }
                let sb = &self.builder;
                let r = with_lun(*lun_id, |s| s.install(sb, *snapshot));
                if let Some(Err(e)) = r {
                    pr_err!("LUN {}: peer's {}: ignored\n", lun_id, Core(e));
                }
            }
            Message::PrOut(o) => {
                let r = execute(o).map(|aborts| {
                    // This node's aborted commands end before the answer.
                    with_dev(o.lun_id, |d| d.abort_commands(&aborts.local));
                });
                let (status, sense) = pr::outcome_to_wire(r);
                let d = PrOutDone { tag: o.tag, lun_id: o.lun_id, status, sense };
                self.hold(o.lun_id, Message::PrOutDone(d), "the answer to a forwarded PR OUT");
            }
            Message::AbortNexus(a) => {
                let n = with_lun(a.lun_id, |s| s.local_role() == Role::Secondary);
                if n == Some(true) {
                    with_dev(a.lun_id, |d| d.abort_commands(&[(a.port, a.rel_port)]));
                } else {
                    refuse(a.lun_id, "PREEMPT AND ABORT from the peer while this node is not secondary for the LUN");
                }
                // Answered in any case: the primary's PR OUT waits for it.
                let done = AbortDone { lun_id: a.lun_id, token: a.token };
                self.hold(a.lun_id, Message::AbortDone(done), "the answer to the peer's PREEMPT AND ABORT");
            }
            Message::AbortLun(a) => {
                // A LUN RESET on the peer: whatever this node's role.
                match with_dev(a.lun_id, |d| d.abort_lun()) {
                    Some(n) if n > 0 => pr_info!("LUN {}: LUN RESET on the peer: {} commands aborted here\n", a.lun_id, n),
                    Some(_) => {}
                    None => refuse(a.lun_id, "a LUN RESET for a LUN this node does not have"),
                }
                // Answered once they have ended; the peer's reset waits.
                let done = AbortDone { lun_id: a.lun_id, token: a.token };
                self.hold(a.lun_id, Message::AbortDone(done), "the answer to the peer's LUN RESET");
            }
            Message::AbortDone(d) => {
                if with_lun(d.lun_id, |s| s.abort_done(d.token)).is_none() {
                    refuse(d.lun_id, "an abort answer for a LUN this node does not have");
                }
            }
            Message::UaNexus(u) => {
                if with_lun(u.lun_id, |s| s.ua_from_peer(Some((&u.port, u.rel_port)), u.asc)).is_none() {
                    refuse(u.lun_id, "a unit attention for a LUN this node does not have");
                }
            }
            Message::UaAll(lun_id, asc) => {
                if with_lun(*lun_id, |s| s.ua_from_peer(None, *asc)).is_none() {
                    refuse(*lun_id, "a unit attention for a LUN this node does not have");
                }
            }
            Message::PrOutDone(d) => {
                if !forward::done(d) && lio::ratelimit() {
                    pr_warn!("LUN {}: answer for no waiting PR OUT (tag {}): ignored\n", d.lun_id, d.tag);
                }
            }
            _ => {}
        }
    }

    /// Sends what is due, in this order: snapshots of the LUNs whose PR
    /// state changed, unit attentions for the peer's nexuses, answers to
    /// the peer's PrOut (this node's forwarded commands go with
    /// `crate::proxy::Proxy::flush`).
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn flush(&mut self, send: &mut dyn FnMut(&Message) -> Result<(), LinkError>) -> Result<(), LinkError> {
        let mut due = KVec::new();
        let mut uas = KVec::new();
        lio::with_devices(|devs| {
            for d in devs {
                let s = &d.device().ha().scsi;
                let id = s.lun_id();
                if s.has_peer_msgs() && uas.push(id, GFP_KERNEL).is_err() {
                    break;
                }
                let last = self.sent.iter().find(|e| e.0 == id).map(|e| e.1);
                if !s.pr_goes_from_here() {
                    // Sent again in full if this node becomes the sender.
                    self.sent.retain(|e| e.0 != id);
                } else if last != Some(s.pr_version()) && due.push(id, GFP_KERNEL).is_err() {
                    break;
                }
            }
        });
        for id in due.iter().copied() {
            let Some(Some(version)) = with_lun(id, |s| s.pr_snapshot(&mut self.scratch)) else {
                pr_err!("LUN {}: PR state cannot be sent to the peer (a registrant's name is too long)\n", id);
                continue;
            };
            for m in self.scratch.iter() {
                send(m)?;
            }
            match self.sent.iter_mut().find(|e| e.0 == id) {
                Some(e) => e.1 = version,
                None => {
                    // Without room the snapshot is sent again next time.
                    let _ = self.sent.push((id, version), GFP_KERNEL);
                }
            }
        }
        for id in uas.iter().copied() {
            if with_lun(id, |s| s.take_peer_msgs(&mut self.scratch)).is_some() {
                for m in self.scratch.iter() {
                    send(m)?;
                }
            }
        }
        let now = sys::now_ms();
        let mut i = 0;
        while let Some(h) = self.replies.get(i) {
            let pending = with_dev(h.lun_id, |d| d.aborts_pending()).unwrap_or(0);
            if pending > 0 && now < h.deadline {
                // Sent on a later pass: the last aborted command's end
                // wakes this thread.
                i += 1;
                continue;
            }
            if pending > 0 {
                pr_warn!("LUN {}: {} aborted commands still running after {} ms: answering the peer\n", h.lun_id, pending, forward::ABORT_WAIT_MS);
            }
            send(&h.msg)?;
            // Cannot fail: `i` indexes the entry just sent.
            let _ = self.replies.remove(i);
        }
        Ok(())
    }

    /// Queues `msg` for the peer, held back while aborted commands of
    /// `lun_id` run here (at most [`forward::ABORT_WAIT_MS`]).
    fn hold(&mut self, lun_id: u32, msg: Message, what: &str) {
        let deadline = sys::now_ms().saturating_add(forward::ABORT_WAIT_MS);
        if self.replies.push(Held { lun_id, deadline, msg }, GFP_KERNEL).is_err() {
            // The peer's command fails by its own timeout.
            pr_err!("LUN {}: no memory for {}\n", lun_id, what);
        }
    }
}

/// Executes a PR OUT the peer forwarded; refused as transitioning when this
/// node is not the LUN's primary (any more). What it aborts.
fn execute(o: &PrOut) -> Result<Aborts, PrError> {
    let Some(req) = ProutRequest::from_wire(o.action, o.res_type, o.key, o.sa_key) else {
        return Err(PrError::Check(Sense::INVALID_FIELD_IN_CDB));
    };
    let k = NexusKey { proto: o.port.proto, initiator: o.port.name(), isid: o.port.isid(), rel_port: o.rel_port };
    let r = with_lun(o.lun_id, |s| {
        if s.local_role() == Role::Primary {
            s.apply(&k, true, &req)
        } else {
            Err(PrError::Check(Sense::ALUA_TRANSITIONING))
        }
    });
    r.unwrap_or(Err(PrError::Check(Sense::ALUA_TRANSITIONING)))
}

fn refuse(lun_id: u32, what: &str) {
    if lio::ratelimit() {
        pr_warn!("LUN {}: {}: ignored\n", lun_id, what);
    }
}
