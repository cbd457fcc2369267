// SPDX-License-Identifier: GPL-2.0

//! ORDERED tasks across the pair in proxy mode (`ha_mode=2`, issue 6).
//!
//! In proxy mode the primary does the block IO of both nodes: its own
//! commands' and the IO the secondary hands it. Each node's LIO orders that
//! node's own tasks around an ORDERED one; what is left is the other node's
//! IO, which LIO does not see. So on the primary every read and write
//! (this node's and the peer's; COMPARE AND WRITE, WRITE SAME and UNMAP
//! aside) is counted while it runs, and the IO of an ORDERED task (this
//! node's, or the peer's: `IoReq::ordered`) is a barrier: it is queued,
//! runs once nothing counted is running any more, and every read or write
//! that comes after it waits in the queue until it has completed. The IO
//! of a HEAD OF QUEUE task (`IoReq::head` from the peer) runs at once, as
//! LIO runs one, even while a barrier runs. Without a barrier the count is
//! the only cost (an atomic increment and decrement per IO).
//!
//! The barrier spans the node's LUNs (an ORDERED task of one LUN also waits
//! for the IO of the others): simpler, never less ordered, and ORDERED
//! tasks are rare (Linux initiators send none).
//!
//! The interlink thread starts what the queue lets run ([`pump`], each pass,
//! woken by completions). A barrier of this node's is only queued while the
//! link is up (otherwise LIO's ordering is all there is to do); when the
//! link goes down the peer's queued IO is dropped (the peer fails those
//! commands itself) and the rest runs.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;

use crate::configfs::NODE;
use crate::core_logic::scsi::alua::{HaMode, Link};
use crate::core_logic::scsi::io::{blk, Completion};
use crate::lio::{
    bufio::{self, BufIo, Gated},
    cmd::{self, Cmd, Rw},
    IoRef,
};
use crate::serialize::ORDER_BARRIERS;
use crate::sys;

/// Counted reads and writes running now (barriers not included).
static RUNNING: AtomicU32 = AtomicU32::new(0);
/// Barriers queued or running: while there is one, new IO queues.
static CLOSED: AtomicU32 = AtomicU32::new(0);
/// A barrier's IO is running.
static BARRIER_RUNNING: AtomicBool = AtomicBool::new(false);

/// A task attribute as the barrier treats it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    /// SIMPLE (and any other): runs unless a barrier is queued or runs.
    Simple,
    /// ORDERED: a barrier.
    Ordered,
    /// HEAD OF QUEUE: runs at once.
    Head,
}

/// What waits in the queue.
enum Work {
    /// A read or write of this node's.
    Local(Cmd, IoRef, Rw),
    /// The peer's IO, ready to be submitted at `sector`.
    Peer(KBox<BufIo>, IoRef, u64),
}

struct Item {
    ordered: bool,
    work: Work,
}

kernel::sync::global_lock! {
    // SAFETY: `init` runs in module init before LIO can call the backend.
    unsafe(uninit) static QUEUE: SpinLock<KVec<Item>> = KVec::new();
}

/// Prepares the queue; call once, at module load.
pub(crate) fn init() {
    // SAFETY: called once, from module init.
    unsafe { QUEUE.init() };
}

/// Whether this node orders IO across the pair now: proxy mode with the
/// link up (the peer can send IO only then).
fn active() -> bool {
    NODE.mode() == HaMode::Proxy && NODE.link() == Link::Online
}

/// Counts an IO of `attr` about to start; `false` (not counted) when it
/// must queue: a barrier's, or another behind a queued or running barrier
/// (HEAD OF QUEUE never queues).
fn enter(attr: Attr) -> bool {
    if attr == Attr::Ordered {
        return false;
    }
    RUNNING.fetch_add(1, Ordering::SeqCst);
    if attr == Attr::Head || CLOSED.load(Ordering::SeqCst) == 0 {
        return true;
    }
    exit();
    false
}

/// A counted IO completed (any context).
pub(crate) fn exit() {
    if RUNNING.fetch_sub(1, Ordering::SeqCst) == 1 && CLOSED.load(Ordering::SeqCst) != 0 {
        sys::link_kick();
    }
}

/// A barrier's IO completed (any context): what waits behind it may run.
pub(crate) fn barrier_done() {
    BARRIER_RUNNING.store(false, Ordering::SeqCst);
    CLOSED.fetch_sub(1, Ordering::SeqCst);
    sys::link_kick();
}

/// Puts `ordered`, `work` at the end of the queue `q` has room in (see
/// [`room`]); a barrier closes the way for what follows.
fn push(q: &mut KVec<Item>, ordered: bool, work: Work) {
    if ordered {
        CLOSED.fetch_add(1, Ordering::SeqCst);
        ORDER_BARRIERS.fetch_add(1, Ordering::Relaxed);
    }
    // Cannot fail: the caller made room.
    let _ = q.push(Item { ordered, work }, GFP_ATOMIC);
}

/// Whether the queue has room for one more (made now if needed).
fn room(q: &mut KVec<Item>) -> bool {
    q.reserve(1, GFP_ATOMIC).is_ok()
}

/// A read or write of this node's on its backing device `io`, in proxy
/// mode on the node that holds it (the primary): submitted now, or queued
/// behind a barrier, or queued as one (an ORDERED task's, while the link is
/// up). `Err`: nothing was done, the command is given back (the caller
/// fails it).
pub(crate) fn local(c: Cmd, io: IoRef, rw: Rw) -> core::result::Result<(), Cmd> {
    let attr = match (c.ordered(), c.head_of_queue()) {
        (true, _) if active() => Attr::Ordered,
        (_, true) => Attr::Head,
        _ => Attr::Simple,
    };
    run_or_queue(
        attr,
        (c, io, rw),
        |(c, io, rw)| cmd::submit_gated(c, io, rw, Gated::Counted),
        |(c, _, _)| c,
        |(c, io, rw)| Work::Local(c, io, rw),
    )
}

/// The peer's IO `b` at `sector` on `io` (proxy mode, this node the
/// primary) of a task with `attr`: submitted now, or queued as [`local`]
/// says. `Err`: nothing was done, `b` comes back.
pub(crate) fn peer(b: KBox<BufIo>, io: IoRef, sector: u64, attr: Attr) -> core::result::Result<(), KBox<BufIo>> {
    run_or_queue(
        attr,
        (b, io, sector),
        |(mut b, io, sector)| {
            b.gated = Gated::Counted;
            bufio::submit(b, io, sector).map_err(|mut b| {
                b.gated = Gated::No;
                b
            })
        },
        |(b, _, _)| b,
        |(b, io, sector)| Work::Peer(b, io, sector),
    )
}

/// An IO of `attr`, `item`: counted and started by `submit` when nothing
/// holds it back, otherwise put in the queue as `work` makes it. `Err`
/// (from `submit`, or `give_back` when the queue has no room): nothing was
/// done.
fn run_or_queue<T, E>(
    attr: Attr,
    item: T,
    submit: impl FnOnce(T) -> core::result::Result<(), E>,
    give_back: impl FnOnce(T) -> E,
    work: impl FnOnce(T) -> Work,
) -> core::result::Result<(), E> {
    if enter(attr) {
        return submit(item).inspect_err(|_| exit());
    }
    let mut q = QUEUE.lock();
    if !room(&mut q) {
        return Err(give_back(item));
    }
    push(&mut q, attr == Attr::Ordered, work(item));
    drop(q);
    sys::link_kick();
    Ok(())
}

/// Starts what the queue lets run: the first entries up to a barrier while
/// no barrier runs, then the barrier once nothing counted runs. The
/// interlink thread calls it on each pass.
pub(crate) fn pump() {
    loop {
        let item = {
            let mut q = QUEUE.lock();
            let Some(head) = q.first() else { return };
            if BARRIER_RUNNING.load(Ordering::SeqCst) {
                return;
            }
            if head.ordered {
                if RUNNING.load(Ordering::SeqCst) != 0 {
                    return;
                }
                BARRIER_RUNNING.store(true, Ordering::SeqCst);
            } else {
                RUNNING.fetch_add(1, Ordering::SeqCst);
            }
            match q.remove(0) {
                Ok(i) => i,
                Err(_) => return,
            }
        };
        start(item);
    }
}

/// Submits a queued entry (counted, or as the running barrier).
fn start(item: Item) {
    let gated = if item.ordered { Gated::Barrier } else { Gated::Counted };
    match item.work {
        Work::Local(c, io, rw) => {
            if let Err(c) = cmd::submit_gated(c, io, rw, gated) {
                ended(gated);
                c.complete(Completion::Busy);
            }
        }
        Work::Peer(mut b, io, sector) => {
            b.gated = gated;
            if let Err(mut b) = bufio::submit(b, io, sector) {
                b.gated = Gated::No;
                ended(gated);
                // Answered busy by the interlink thread, as if completed.
                bufio::fail(b, blk::RESOURCE);
            }
        }
    }
}

/// Ends the count of an IO of kind `gated` (see [`bufio::BufIo::gated`]);
/// its completion calls this too.
pub(crate) fn ended(gated: Gated) {
    match gated {
        Gated::No => {}
        Gated::Counted => exit(),
        Gated::Barrier => barrier_done(),
    }
}

/// The link went down: the peer's queued IO is dropped (the peer fails
/// those commands itself), and this node's runs. The interlink thread.
pub(crate) fn offline() {
    let dropped = {
        let mut q = QUEUE.lock();
        let mut dropped = KVec::new();
        let mut i = 0;
        while i < q.len() {
            if q.get(i).is_some_and(|it| matches!(it.work, Work::Peer(..))) {
                if let Ok(it) = q.remove(i) {
                    if it.ordered {
                        CLOSED.fetch_sub(1, Ordering::SeqCst);
                    }
                    // Freed outside the lock; without room, here.
                    let _ = dropped.push(it, GFP_ATOMIC);
                }
            } else {
                i += 1;
            }
        }
        dropped
    };
    drop(dropped);
    pump();
}

/// The peer's IO named `cookie` (see `crate::proxy`), taken out of the
/// queue if it waits there (its command was aborted on the peer); what
/// waited behind it as a barrier may run. The interlink thread.
pub(crate) fn take_peer(cookie: u64) -> Option<KBox<BufIo>> {
    let taken = {
        let mut q = QUEUE.lock();
        let i = q.iter().position(|it| matches!(&it.work, Work::Peer(b, ..) if b.cookie == cookie))?;
        let it = q.remove(i).ok()?;
        if it.ordered {
            CLOSED.fetch_sub(1, Ordering::SeqCst);
        }
        it
    };
    pump();
    match taken.work {
        // The use of the device ends here.
        Work::Peer(b, _io, _) => Some(b),
        Work::Local(..) => None,
    }
}

/// Gives back the queue's buffer at unload (the thread has stopped and no
/// device is left, so nothing is queued; anything that were would be freed
/// with it).
pub(crate) fn drain() {
    let q = core::mem::take(&mut *QUEUE.lock());
    drop(q);
}
