// SPDX-License-Identifier: GPL-2.0

//! Reads and writes submitted under an order of the two nodes (mode 1,
//! `crate::serialize`): each carries a [`Ticket`] naming its order. The
//! bio completion (possibly in interrupt context) completes the command,
//! puts the ticket on a lock-free done list and wakes the interlink
//! thread, which takes the tickets back ([`take_done`]) and releases the
//! orders. Nothing here takes a lock or sleeps in the completion.

use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{bindings as kb, prelude::*};

use super::bio;
use super::cmd::{submit_rw, Cmd, Rw};
use super::IoRef;
use crate::core_logic::scsi::{
    io::{self, Completion},
    order::Side,
};

/// The order an IO runs under, given back when its bios complete.
pub(crate) struct Ticket {
    /// The primary's own IO, or the secondary's.
    pub(crate) side: Side,
    /// Its name in the primary's order table (the primary's own IO:
    /// [`Ticket::id`]), or the secondary's request tag.
    pub(crate) id: u64,
    /// The LUN's HA identity.
    pub(crate) lun_id: u32,
    cmd: Option<Cmd>,
    /// Done-list link.
    next: *mut Ticket,
}

// SAFETY: a ticket is owned by one party at a time (its submitter, the
// block layer, the done list, the interlink thread); the raw link is only
// followed by the party that took the whole list.
unsafe impl Send for Ticket {}

impl Ticket {
    /// A ticket for an IO of `side`; `id` 0 names it by its own address
    /// (unique while it lives).
    pub(crate) fn new(side: Side, id: u64, lun_id: u32) -> Result<KBox<Ticket>> {
        let mut t = KBox::new(Ticket { side, id, lun_id, cmd: None, next: ptr::null_mut() }, GFP_KERNEL)?;
        if id == 0 {
            t.id = ptr::from_ref::<Ticket>(&t) as u64;
        }
        Ok(t)
    }
}

/// Completed tickets, newest first (a Treiber stack).
static DONE: AtomicPtr<Ticket> = AtomicPtr::new(ptr::null_mut());

/// Puts a leaked ticket on the done list and wakes the interlink thread.
fn push_done(t: *mut Ticket) {
    let mut head = DONE.load(Ordering::Acquire);
    loop {
        // SAFETY: `t` is a leaked ticket owned by the caller until the
        // push succeeds.
        unsafe { (*t).next = head };
        match DONE.compare_exchange_weak(head, t, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    crate::sys::link_kick();
}

/// Submits read or write `rw` of `cmd` on `io`'s device under `ticket`.
/// The command completes with the bios; the ticket then lands on the done
/// list. A submission that fails completes the command BUSY (the
/// initiator retries) and puts the ticket on the done list at once.
pub(crate) fn submit(cmd: Cmd, io: IoRef, rw: Rw, ticket: KBox<Ticket>) {
    let raw_cmd = cmd.as_raw();
    // SAFETY: the command is live and uncompleted (the ticket holds it
    // until `ordered_done`, which completes it, runs).
    submit_with(cmd, io, ticket, |io, private, end_io| unsafe { submit_rw(raw_cmd, io, &rw, private, end_io) });
}

/// The bio completion [`submit_with`] hands its submission.
pub(crate) type EndIo = unsafe extern "C" fn(*mut kb::bio);

/// As [`submit`], with the bios submitted by `f` (given the device, the
/// completion's private pointer and the completion), e.g. WRITE SAME's.
/// `f` returns `Err` when it submitted nothing.
pub(crate) fn submit_with(
    cmd: Cmd,
    io: IoRef,
    mut ticket: KBox<Ticket>,
    f: impl FnOnce(&IoRef, *mut c_void, EndIo) -> Result,
) {
    ticket.cmd = Some(cmd);
    let t = KBox::into_raw(ticket);
    match f(&io, t.cast::<c_void>(), ordered_done) {
        Ok(()) => io.keep(),
        Err(_) => {
            // SAFETY: nothing was submitted, so `t` is still only ours.
            if let Some(c) = unsafe { (*t).cmd.take() } {
                c.complete(Completion::Busy);
            }
            drop(io);
            push_done(t);
        }
    }
}

/// Gives back the order of an IO that ran without bios of this module's
/// own completion (UNMAP, a zeroing WRITE SAME): it lands on the done list.
pub(crate) fn finish(ticket: KBox<Ticket>) {
    push_done(KBox::into_raw(ticket));
}

/// Completion of an IO ordered across the nodes (mode 1): its order goes back on the done list.
///
/// # Safety
/// The block layer's `bi_end_io`, called once for the last bio of `submit_rw`, whose `bi_private`
/// is the IO's ticket.
unsafe extern "C" fn ordered_done(b: *mut kb::bio) {
    // SAFETY: the block layer calls this once for the last bio of
    // `submit_rw`.
    let (status, write, private) = unsafe { bio::finish(b) };
    let t = private.cast::<Ticket>();
    if t.is_null() {
        return;
    }
    // SAFETY: `t` is the ticket leaked by `submit`, owned by this
    // completion until pushed.
    let cmd = unsafe { (*t).cmd.take() };
    push_done(t);
    if let Some(cmd) = cmd {
        // The use kept at submission ends with the bios.
        cmd.device().io_end();
        cmd.complete(io::from_blk_status(status, write));
    }
}

/// Runs `f` on each ticket completed so far.
pub(crate) fn take_done(mut f: impl FnMut(KBox<Ticket>)) {
    let mut p = DONE.swap(ptr::null_mut(), Ordering::AcqRel);
    while !p.is_null() {
        // SAFETY: every entry was leaked by `submit` and pushed once; the
        // swap above made the whole list ours.
        let t = unsafe { KBox::from_raw(p) };
        p = t.next;
        f(t);
    }
}
