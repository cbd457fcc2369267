// SPDX-License-Identifier: GPL-2.0

//! Serialize-only mode (`ha_mode=1`, issue 6): both nodes hold the same
//! shared backing device and do their own IO on it; the primary of a LUN
//! orders the two nodes' reads and writes (freebsd-ctl-ha-behaviour.md
//! §1.2, §4 SERIALIZE / FINISH_IO).
//!
//! * The secondary parks each read or write and sends `OrderReq` (LUN,
//!   range, read or write); on `OrderGrant` Go it submits the IO, and when
//!   the IO completes it sends `OrderDone`. Another grant status fails the
//!   command (BUSY, or ALUA TRANSITIONING when the peer is not primary).
//! * The primary records its own reads and writes and the secondary's in
//!   [`Order`]: an IO waits while an overlapping IO of the other node runs
//!   (unless both read). Its own IO then waits here and is submitted by
//!   the interlink thread; the secondary's gets its grant then.
//!
//! Bio completions (interrupt context) take no lock: they put the IO's
//! [`Ticket`] on a lock-free list (`crate::lio::ticket`) and kick the
//! interlink thread, which releases the order ([`pump`]). When the link goes down the primary forgets the
//! secondary's IO (which the secondary fails or finishes on its own) and
//! runs its own waiting IO; the secondary fails what waits for a grant as
//! transitioning, so that the initiator retries, and its IO in flight ends
//! normally. A grant the secondary no longer waits for (it expired) is
//! answered with `OrderDone` at once, so the primary never keeps an order
//! of an IO that does not run.
//!
//! WRITE SAME and each UNMAP descriptor are ordered the same way, as a
//! write over their range, by a caller that sleeps until admitted
//! ([`enter`]: LIO runs them in process context). The read or write of an
//! ORDERED task is ordered as a write over the whole LUN: it runs after
//! every IO of the other node admitted before it, and the other node's
//! later IO waits for it (LIO orders each node's own tasks around it).
//!
//! COMPARE AND WRITE through the secondary is done by the primary (the
//! proxy path), under the device's COMPARE AND WRITE lock, so it is atomic
//! against COMPARE AND WRITE through either node.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use kernel::{prelude::*, sync::Arc};

use crate::core_logic::control::Role;
use crate::core_logic::scsi::{
    io::Completion,
    order::{Admit, Io, Order, Side},
    sense::Sense,
};
use crate::core_logic::wire::msg::{Message, OrderDone, OrderGrant, OrderReq, OrderStatus};
use crate::lio::{
    self,
    bindings as b,
    cmd::{Cmd, Rw},
    ticket::{self, Ticket},
    IoRef,
};
use crate::sys;

/// How long the secondary waits for a grant (the primary may hold it
/// behind its own IO).
const GRANT_MS: u64 = 15000;
/// Reads and writes the secondary has asked for at once; more are BUSY.
const MAX_ASKED: usize = 256;

/// IOs the secondary asked the primary to order.
pub(crate) static ORDER_ASKED: AtomicU64 = AtomicU64::new(0);
/// IOs (of either node) the primary held back behind the other node's.
pub(crate) static ORDER_WAITED: AtomicU64 = AtomicU64::new(0);
/// IOs of ORDERED tasks this node ordered (or asked to order) over the
/// whole LUN.
pub(crate) static ORDER_BARRIERS: AtomicU64 = AtomicU64::new(0);

/// A read or write ready to be submitted on this node.
struct Job {
    cmd: Cmd,
    io: IoRef,
    rw: Rw,
}

/// How a [`Gate`] opened.
const GO: u8 = 1;
const BUSY: u8 = 2;
const TRANSITIONING: u8 = 3;

/// Where a caller of [`enter`] sleeps until its IO is admitted.
#[pin_data]
struct Gate {
    #[pin]
    opened: kernel::sync::Completion,
    verdict: AtomicU8,
}

impl Gate {
    fn new() -> Result<Arc<Gate>> {
        Arc::pin_init(pin_init!(Gate { opened <- kernel::sync::Completion::new(), verdict: AtomicU8::new(0) }), GFP_KERNEL)
    }

    /// Wakes the sleeper with `verdict` (once; later calls change nothing
    /// it sees).
    fn open(&self, verdict: u8) {
        let _ = self.verdict.compare_exchange(0, verdict, Ordering::AcqRel, Ordering::Acquire);
        self.opened.complete_all();
    }

    /// Sleeps until opened; the verdict.
    fn wait(&self) -> u8 {
        self.opened.wait_for_completion();
        self.verdict.load(Ordering::Acquire)
    }
}

/// What waits for an order.
enum Waiter {
    /// A read or write, submitted once admitted.
    Rw(Job),
    /// A caller asleep in [`enter`].
    Gate(Arc<Gate>),
}

impl Waiter {
    /// Ends the wait without the order: the command fails with `c`.
    fn fail(self, c: Completion) {
        match self {
            Waiter::Rw(job) => job.cmd.complete(c),
            Waiter::Gate(g) => g.open(if c == Completion::Busy { BUSY } else { TRANSITIONING }),
        }
    }
}

/// An IO of the secondary's, waiting for its grant.
struct Asked {
    tag: u32,
    lun_id: u32,
    deadline: u64,
    waiter: Waiter,
}

/// An IO of the primary's own, waiting behind the secondary's.
enum Held {
    /// A read or write, submitted under its ticket once admitted.
    Rw { id: u64, job: Job, ticket: KBox<Ticket> },
    /// A caller asleep in [`enter`] (it keeps its ticket).
    Gate { id: u64, gate: Arc<Gate> },
}

impl Held {
    fn id(&self) -> u64 {
        match self {
            Held::Rw { id, .. } | Held::Gate { id, .. } => *id,
        }
    }
}

struct State {
    order: Order,
    asked: KVec<Asked>,
    held: KVec<Held>,
    next_tag: u32,
    online: bool,
}

kernel::sync::global_lock! {
    // SAFETY: `init` runs in module init before LIO can call the backend.
    unsafe(uninit) static STATE: SpinLock<State> = State {
        order: Order::new(),
        asked: KVec::new(),
        held: KVec::new(),
        next_tag: 0,
        online: false,
    };
}

impl State {
    /// Enters the primary's own IO `io` in the order table. `None`: it
    /// waits, `held` is parked until [`start_ready`] runs it. Otherwise
    /// `held` comes back with [`Admit::Go`] (run it now) or refused (no
    /// room).
    fn request_local(&mut self, io: Io, held: Held) -> Option<(Admit, Held)> {
        if self.held.reserve(1, GFP_ATOMIC).is_err() {
            return Some((Admit::Full, held));
        }
        match self.order.request(io) {
            Admit::Wait => {
                ORDER_WAITED.fetch_add(1, Ordering::Relaxed);
                // Cannot fail: room was reserved above.
                let _ = self.held.push(held, GFP_ATOMIC);
                None
            }
            a => Some((a, held)),
        }
    }
}

/// Prepares the table; call once, at module load.
pub(crate) fn init() {
    // SAFETY: called once from module init, before any command.
    unsafe { STATE.init() };
}

/// The order an IO of `c` over `sectors` sectors at `start` asks for: its
/// range, or the whole LUN (as a write) for an ORDERED task.
fn range(side: Side, id: u64, c: &Cmd, start: u64, sectors: u64, write: bool) -> Io {
    let lun_id = c.device().ha().scsi.lun_id();
    if c.ordered() {
        ORDER_BARRIERS.fetch_add(1, Ordering::Relaxed);
        return Io { side, id, lun_id, start: 0, end: u64::MAX, write: true };
    }
    Io { side, id, lun_id, start, end: start.saturating_add(sectors.max(1)), write }
}

/// The sectors a read or write moves.
fn rw_sectors(rw: &Rw) -> u64 {
    (rw.bytes() as u64).div_ceil(512).max(1)
}

/// What to do with a read or write that is not ordered: submit it as usual.
pub(crate) type Unordered = (Cmd, IoRef, Rw);

/// A read or write of a LUN in mode 1, on this node's (shared) backing
/// device `io`: ordered against the other node's IO, then submitted; or
/// handed back (`Err`) when nothing can overlap it: the primary without a
/// link. (IO the primary started before the link came up is not in the
/// table; the secondary asks only once it has learnt, over the link, that
/// this node is primary, by which time such IO has normally completed.)
pub(crate) fn rw(cmd: Cmd, io: IoRef, rw: Rw) -> core::result::Result<b::sense_reason_t, Unordered> {
    if cmd.device().ha().scsi.local_role() != Role::Primary {
        return Ok(secondary_rw(Job { cmd, io, rw }));
    }
    if !STATE.lock().online {
        return Err((cmd, io, rw));
    }
    Ok(primary_rw(Job { cmd, io, rw }))
}

fn primary_rw(job: Job) -> b::sense_reason_t {
    let lun_id = job.cmd.device().ha().scsi.lun_id();
    // The ticket's address names the IO while it is in the table.
    let Ok(ticket) = Ticket::new(Side::Local, 0, lun_id) else { return lio::cmd::reason::LUN_BUSY };
    let id = ticket.id;
    let r = range(Side::Local, id, &job.cmd, job.cmd.sectors(job.cmd.lba()), rw_sectors(&job.rw), job.rw.write());
    let refused = STATE.lock().request_local(r, Held::Rw { id, job, ticket });
    match refused {
        // Parked: submitted once admitted.
        None => lio::cmd::reason::NONE,
        Some((Admit::Go, Held::Rw { job, ticket, .. })) => {
            submit(job, ticket);
            lio::cmd::reason::NONE
        }
        Some(_) => lio::cmd::reason::LUN_BUSY,
    }
}

fn secondary_rw(job: Job) -> b::sense_reason_t {
    let io = range(Side::Remote, 0, &job.cmd, job.cmd.sectors(job.cmd.lba()), rw_sectors(&job.rw), job.rw.write());
    match ask(io, Waiter::Rw(job)) {
        Ok(_) => lio::cmd::reason::NONE,
        Err(r) => r,
    }
}

/// The secondary asks the primary to order `io` (from [`range`]): sends
/// OrderReq and parks `waiter` until the grant; its tag. `Err`: nothing
/// was asked, `waiter` is dropped as it is, and the caller fails the
/// command with the reason.
fn ask(io: Io, waiter: Waiter) -> core::result::Result<u32, b::sense_reason_t> {
    let all = io.end == u64::MAX;
    let sectors = if all { 0 } else { io.end - io.start };
    let Ok(sectors) = u32::try_from(sectors) else { return Err(lio::cmd::reason::INVALID_CDB_FIELD) };
    let mut s = STATE.lock();
    if !s.online {
        return Err(lio::cmd::reason::ALUA_TRANSITION);
    }
    if s.asked.len() >= MAX_ASKED || s.asked.reserve(1, GFP_ATOMIC).is_err() {
        return Err(lio::cmd::reason::LUN_BUSY);
    }
    s.next_tag = s.next_tag.wrapping_add(1) & 0x7fff_ffff;
    let tag = s.next_tag;
    let (lun_id, sector) = (io.lun_id, if all { 0 } else { io.start });
    let msg = Message::OrderReq(OrderReq { tag, lun_id, write: io.write, all, sector, sectors });
    if !crate::forward::queue(msg) {
        return Err(lio::cmd::reason::ALUA_TRANSITION);
    }
    let deadline = sys::now_ms().saturating_add(GRANT_MS);
    // Cannot fail: room was reserved above.
    let _ = s.asked.push(Asked { tag, lun_id, deadline, waiter }, GFP_ATOMIC);
    ORDER_ASKED.fetch_add(1, Ordering::Relaxed);
    Ok(tag)
}

/// A WRITE SAME or one UNMAP descriptor of `c` over `sectors` sectors at
/// `start`, on this node's shared backing device (mode 1): sleeps until
/// the LUN's primary lets it run. `Ok(Some(ticket))`: run it, then give
/// the ticket back ([`ticket::finish`], or [`ticket::submit_with`] with
/// its bios); `Ok(None)`: run it unordered (the primary without a link);
/// `Err`: fail the command with this reason. Process context only.
pub(crate) fn enter(c: &Cmd, start: u64, sectors: u64) -> core::result::Result<Option<KBox<Ticket>>, b::sense_reason_t> {
    let busy = lio::cmd::reason::LUN_BUSY;
    let gate = Gate::new().map_err(|_| busy)?;
    let lun_id = c.device().ha().scsi.lun_id();
    let verdict = if c.device().ha().scsi.local_role() == Role::Primary {
        // The ticket's address names the IO while it is in the table.
        let ticket = Ticket::new(Side::Local, 0, lun_id).map_err(|_| busy)?;
        let id = ticket.id;
        {
            let mut s = STATE.lock();
            if !s.online {
                return Ok(None);
            }
            match s.request_local(range(Side::Local, id, c, start, sectors, true), Held::Gate { id, gate: gate.clone() }) {
                None => {}
                Some((Admit::Go, _)) => return Ok(Some(ticket)),
                Some(_) => return Err(busy),
            }
        }
        match gate.wait() {
            GO => return Ok(Some(ticket)),
            v => v,
        }
    } else {
        let tag = ask(range(Side::Remote, 0, c, start, sectors, true), Waiter::Gate(gate.clone()))?;
        match gate.wait() {
            GO => {
                return match Ticket::new(Side::Remote, u64::from(tag), lun_id) {
                    Ok(t) => Ok(Some(t)),
                    Err(_) => {
                        let _ = crate::forward::queue(Message::OrderDone(OrderDone { tag, lun_id }));
                        Err(busy)
                    }
                };
            }
            v => v,
        }
    };
    Err(if verdict == BUSY { busy } else { lio::cmd::reason::ALUA_TRANSITION })
}

/// Submits `job` under `ticket`.
fn submit(job: Job, ticket: KBox<Ticket>) {
    ticket::submit(job.cmd, job.io, job.rw, ticket);
}

/// Ends the orders of completed IO and starts what may run now; the
/// interlink thread calls it on each pass, linked or not.
pub(crate) fn pump() {
    let mut freed = false;
    ticket::take_done(|t| match t.side {
        Side::Local => freed |= STATE.lock().order.release(Side::Local, t.id).is_some(),
        // Lossless: the secondary's ids are its 31-bit tags.
        Side::Remote => {
            let _ = crate::forward::queue(Message::OrderDone(OrderDone { tag: t.id as u32, lun_id: t.lun_id }));
        }
    });
    if freed {
        start_ready();
    }
}

/// Starts the IO that may run now: the secondary's gets its grant, the
/// primary's own is submitted.
fn start_ready() {
    loop {
        let mut s = STATE.lock();
        let Some(io) = s.order.next_ready() else { return };
        match io.side {
            Side::Remote => {
                drop(s);
                // Lossless: remote ids are the secondary's 31-bit tags.
                let g = OrderGrant { tag: io.id as u32, lun_id: io.lun_id, status: OrderStatus::Go };
                if !crate::forward::queue(Message::OrderGrant(g)) {
                    // The link went down: its orders are forgotten.
                    s = STATE.lock();
                    s.order.release(Side::Remote, io.id);
                }
            }
            Side::Local => {
                let i = s.held.iter().position(|h| h.id() == io.id);
                let held = i.and_then(|i| s.held.remove(i).ok());
                drop(s);
                match held {
                    Some(Held::Rw { job, ticket, .. }) => submit(job, ticket),
                    // It runs now and hands its ticket back when done.
                    Some(Held::Gate { gate, .. }) => gate.open(GO),
                    None => {
                        STATE.lock().order.release(Side::Local, io.id);
                    }
                }
            }
        }
    }
}

/// An ordering message from the peer (others are ignored).
pub(crate) fn inbound(m: &Message) {
    match m {
        Message::OrderReq(q) => on_request(q),
        Message::OrderGrant(g) => on_grant(g),
        Message::OrderDone(d) => {
            let found = STATE.lock().order.release(Side::Remote, u64::from(d.tag)).is_some();
            if found {
                start_ready();
            } else if lio::ratelimit() {
                pr_warn!("LUN {}: the peer ended an order it does not hold (tag {}): ignored\n", d.lun_id, d.tag);
            }
        }
        _ => {}
    }
}

/// The secondary asks to run a read or write (this node should be the
/// LUN's primary).
fn on_request(q: &OrderReq) {
    let answer = |status| {
        let _ = crate::forward::queue(Message::OrderGrant(OrderGrant { tag: q.tag, lun_id: q.lun_id, status }));
    };
    let primary = crate::configfs::NODE.mode() == crate::core_logic::scsi::alua::HaMode::SerializeOnly
        && lio::with_devices(|devs| {
            devs.iter().any(|d| {
                let scsi = &d.device().ha().scsi;
                scsi.lun_id() == q.lun_id && scsi.local_role() == Role::Primary && d.device().configured()
            })
        });
    if !primary {
        answer(OrderStatus::NotHeld);
        return;
    }
    let id = u64::from(q.tag);
    let io = Io { side: Side::Remote, id, lun_id: q.lun_id, start: q.sector, end: q.end(), write: q.write };
    let admit = {
        let mut s = STATE.lock();
        if s.order.release(Side::Remote, id).is_some() {
            // A tag still in use: the peer is confused; the old order is
            // dropped rather than kept forever.
            if lio::ratelimit() {
                pr_err!("LUN {}: the peer reused order tag {} still in use: the old order is dropped\n", q.lun_id, q.tag);
            }
        }
        s.order.request(io)
    };
    match admit {
        Admit::Go => answer(OrderStatus::Go),
        Admit::Wait => {
            ORDER_WAITED.fetch_add(1, Ordering::Relaxed);
        }
        Admit::Full => answer(OrderStatus::Busy),
    }
}

/// The primary's answer to one of this node's requests.
fn on_grant(g: &OrderGrant) {
    let asked = {
        let mut s = STATE.lock();
        let i = s.asked.iter().position(|a| a.tag == g.tag && a.lun_id == g.lun_id);
        i.and_then(|i| s.asked.remove(i).ok())
    };
    let Some(a) = asked else {
        if g.status == OrderStatus::Go {
            // Expired here: the range is given back at once.
            let _ = crate::forward::queue(Message::OrderDone(OrderDone { tag: g.tag, lun_id: g.lun_id }));
        }
        return;
    };
    match (g.status, a.waiter) {
        // The sleeper takes its ticket itself.
        (OrderStatus::Go, Waiter::Gate(gate)) => gate.open(GO),
        (OrderStatus::Go, Waiter::Rw(job)) => match Ticket::new(Side::Remote, u64::from(a.tag), a.lun_id) {
            Ok(t) => submit(job, t),
            Err(_) => {
                job.cmd.complete(Completion::Busy);
                let _ = crate::forward::queue(Message::OrderDone(OrderDone { tag: g.tag, lun_id: g.lun_id }));
            }
        },
        (OrderStatus::Busy, w) => w.fail(Completion::Busy),
        (OrderStatus::NotHeld, w) => w.fail(Completion::Check(Sense::ALUA_TRANSITIONING)),
    }
}

/// Fails the secondary's requests not granted by `now`; returns how many.
pub(crate) fn expire(now: u64) -> usize {
    let mut n = 0;
    loop {
        let a = {
            let mut s = STATE.lock();
            let i = s.asked.iter().position(|a| a.deadline <= now);
            i.and_then(|i| s.asked.remove(i).ok())
        };
        let Some(a) = a else { return n };
        if lio::ratelimit() {
            pr_warn!("LUN {}: no grant from the primary for an IO: failed as transitioning\n", a.lun_id);
        }
        a.waiter.fail(Completion::Check(Sense::ALUA_TRANSITIONING));
        n += 1;
    }
}

/// The link came up or went down: down, the peer's orders are forgotten
/// (this node's own waiting IO runs) and this node's requests fail.
pub(crate) fn set_online(online: bool) {
    let asked = {
        let mut s = STATE.lock();
        s.online = online;
        if online {
            return;
        }
        s.order.forget(Side::Remote);
        core::mem::take(&mut s.asked)
    };
    for a in asked {
        a.waiter.fail(Completion::Check(Sense::ALUA_TRANSITIONING));
    }
    start_ready();
}

/// Frees what is left (at unload, once no IO is in flight).
pub(crate) fn drain() {
    set_online(false);
    pump();
    let mut s = STATE.lock();
    let held = core::mem::take(&mut s.held);
    drop(s);
    for h in held {
        match h {
            Held::Rw { job, .. } => job.cmd.complete(Completion::Busy),
            Held::Gate { gate, .. } => gate.open(BUSY),
        }
    }
}

/// Requests waiting for a grant (secondary) and IO held back (primary).
pub(crate) fn waiting() -> usize {
    let s = STATE.lock();
    s.asked.len() + s.held.len()
}
