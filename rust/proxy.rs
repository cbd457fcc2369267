// SPDX-License-Identifier: GPL-2.0

//! Proxy mode (`ha_mode=2`, issue 6), run by the interlink thread for one
//! connection.
//!
//! The secondary parses each command and makes the SCSI checks itself
//! (unit attentions, ALUA, reservations: its PR state is the primary's
//! snapshot); only the block IO of a command it cannot do, because it does
//! not hold the backing device, travels: `crate::forward` parks the command
//! and sends IoReq (with a write's data as IoData frames). The primary
//! ([`Proxy::inbound`]) does the IO on a buffer of its own and answers with
//! the read data and IoDone; the secondary then completes the command.
//!
//! The primary holds at most [`MAX_HELD`] bytes of the peer's IO at once
//! (more is answered busy), and drops a write whose data does not arrive
//! in order. Everything the secondary sends here was checked by the codec
//! (lengths, offsets within 8 MiB); the LUN's range is checked here.
//!
//! A COMPARE AND WRITE received by the secondary travels whole (the data
//! to compare and the data to write): the primary takes LIO's COMPARE AND
//! WRITE lock of the device (`caw_sem`, the one its own COMPARE AND WRITEs
//! take), reads, compares and writes, and releases the lock when the write
//! completes, so that COMPARE AND WRITEs through both nodes are atomic
//! against each other. The interlink thread never waits for the lock: it
//! retries each pass (every millisecond while one waits) and answers busy
//! after [`CAW_WAIT_MS`].

use kernel::prelude::*;

use crate::configfs::NODE;
use crate::core_logic::control::Role;
use crate::core_logic::scsi::alua::HaMode;
use crate::core_logic::link::{LinkError, Session, Tx};
use crate::core_logic::scsi::io::blk;
use crate::core_logic::wire::msg::{IoData, IoDone, IoOp, IoReq, IoStatus, Message, IO_CHUNK};
use crate::barrier::Attr;
use crate::lio::CawLock;
use crate::forward::{self, Outgoing, ANSWER_BIT};
use crate::lio::{
    self,
    bufio::{self, BufIo, BufOp, PageBuf},
    IoRef,
};
use crate::sys::{self, KernelMac};

/// Bytes of the peer's IO this node holds at once.
const MAX_HELD: usize = 64 << 20;

/// How long a COMPARE AND WRITE of the peer's waits for the device's lock
/// before it is answered busy (the initiator retries it).
const CAW_WAIT_MS: u64 = 5000;

/// What a write of the peer's does once its data is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// A write of the whole buffer.
    Write,
    /// WRITE SAME of this many sectors (the buffer is one logical block).
    Same(u64),
    /// COMPARE AND WRITE (the buffer: data to compare, then data to write).
    Caw,
}

/// A write of the peer's waiting for its data.
struct Filling {
    tag: u32,
    lun_id: u32,
    sector: u64,
    fua: bool,
    /// Its task's attribute (see `crate::barrier`).
    attr: Attr,
    fill: Fill,
    buf: PageBuf,
    got: usize,
}

/// A COMPARE AND WRITE of the peer's, from its data's arrival to the
/// submission of its write (or its miscompare).
struct Caw {
    tag: u32,
    lun_id: u32,
    sector: u64,
    fua: bool,
    /// The data to compare, then the data to write (twice the range).
    data: PageBuf,
    /// When it stops waiting for the lock.
    deadline: u64,
    /// Its read was submitted (it holds the lock).
    reading: bool,
}

impl Caw {
    /// Bytes compared (and written).
    fn len(&self) -> usize {
        self.data.len() / 2
    }
}

/// Offset of the first byte where `read` and the first `read.len()` bytes
/// of `cmp` (the data to compare) differ, or `None` when equal; `scratch`
/// holds a piece of each at a time. A buffer that cannot be read counts
/// as a difference at the start of the piece.
fn first_difference(read: &PageBuf, cmp: &PageBuf, scratch: &mut [u8]) -> Option<usize> {
    let len = read.len();
    let half = scratch.len() / 2;
    if half == 0 {
        return Some(0);
    }
    let (x, y) = scratch.split_at_mut(half);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(half);
        let (Some(x), Some(y)) = (x.get_mut(..n), y.get_mut(..n)) else { return Some(off) };
        if read.read_at(off, x).is_err() || cmp.read_at(off, y).is_err() {
            return Some(off);
        }
        if let Some(i) = x.iter().zip(y.iter()).position(|(a, b)| a != b) {
            return Some(off + i);
        }
        off += n;
    }
    None
}

fn cookie(tag: u32, lun_id: u32) -> u64 {
    (u64::from(lun_id) << 32) | u64::from(tag)
}

fn split(cookie: u64) -> (u32, u32) {
    // Lossless: the halves of a value built by `cookie`.
    (cookie as u32, (cookie >> 32) as u32)
}

/// A use of the backing device of LUN `lun_id` for `n` sectors at
/// `sector`, if this node is its primary and holds it, with the LUN's
/// logical block size.
fn lun_io(lun_id: u32, sector: u64, n: u64) -> core::result::Result<(IoRef, u32), IoStatus> {
    lun_io_with(lun_id, sector, n, |_| {})
}

/// As [`lun_io`], with the LUN's COMPARE AND WRITE lock, or `Ok(None)`
/// while another holds it.
fn lun_caw(lun_id: u32, sector: u64, n: u64) -> core::result::Result<Option<(IoRef, CawLock)>, IoStatus> {
    let mut lock = None;
    let (io, _) = lun_io_with(lun_id, sector, n, |d| lock = d.caw_try_lock())?;
    Ok(lock.map(|l| (io, l)))
}

/// As [`lun_io`], running `also` on the device (registry locked) before
/// the use begins.
fn lun_io_with(
    lun_id: u32,
    sector: u64,
    n: u64,
    also: impl FnOnce(&lio::Device),
) -> core::result::Result<(IoRef, u32), IoStatus> {
    lio::with_devices(|devs| {
        let d = devs.iter().find(|d| d.device().ha().scsi.lun_id() == lun_id).ok_or(IoStatus::NotHeld)?;
        if d.device().ha().scsi.local_role() != Role::Primary {
            return Err(IoStatus::NotHeld);
        }
        let (bs, blocks) = d.geometry();
        let sectors = blocks.saturating_mul(u64::from(bs / 512));
        let end = sector.checked_add(n).ok_or(IoStatus::Blk(blk::IOERR))?;
        if end > sectors {
            if lio::ratelimit() {
                pr_err!("LUN {}: the peer asked for IO past the end ({} sectors at {}): refused\n", lun_id, n, sector);
            }
            return Err(IoStatus::Blk(blk::IOERR));
        }
        also(d.device());
        let io = d.device().io_begin().ok_or(IoStatus::NotHeld)?;
        Ok((io, bs))
    })
}

/// One connection's proxy state (both sides: the primary's IO for the
/// peer, and the sending of this node's forwarded commands).
pub(crate) struct Proxy {
    filling: KVec<Filling>,
    caws: KVec<Caw>,
    replies: KVec<IoDone>,
    done: KVec<KBox<BufIo>>,
    outgoing: KVec<Outgoing>,
    chunk: KVVec<u8>,
    held: usize,
}

impl Proxy {
    /// Fresh state; the data scratch buffer is allocated here.
    pub(crate) fn new() -> Result<Proxy> {
        let mut chunk = KVVec::new();
        chunk.resize(IO_CHUNK, 0, GFP_KERNEL)?;
        // IO done for the peer of an earlier connection: its commands have
        // failed there already; nobody waits for the answers.
        bufio::drain();
        Ok(Proxy {
            filling: KVec::new(),
            caws: KVec::new(),
            replies: KVec::new(),
            done: KVec::new(),
            outgoing: KVec::new(),
            chunk,
            held: 0,
        })
    }

    /// Whether a COMPARE AND WRITE waits for its lock (the interlink
    /// thread then comes back within a millisecond).
    pub(crate) fn waiting(&self) -> bool {
        self.caws.iter().any(|c| !c.reading)
    }

    /// An IO message from the peer (`data`: an IoData's bytes).
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn inbound(&mut self, m: &Message, data: &[u8]) {
        match m {
            Message::IoReq(q) => {
                forward::PROXIED_IN.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                if let Err(st) = self.start(q) {
                    self.reply(q.tag, q.lun_id, st);
                }
            }
            Message::IoData(d) if d.tag & ANSWER_BIT != 0 => {
                if !forward::io_data(d, data) && lio::ratelimit() {
                    pr_warn!("interlink: read data for no waiting IO (tag {}, offset {}): ignored\n", d.tag & !ANSWER_BIT, d.offset);
                }
            }
            Message::IoData(d) => self.write_data(d, data),
            Message::IoAbort(a) => self.abort(a.tag, a.lun_id),
            Message::IoDone(d) => {
                if !forward::io_done(d) && lio::ratelimit() {
                    pr_warn!("LUN {}: answer for no waiting IO (tag {}): ignored\n", d.lun_id, d.tag);
                }
            }
            _ => {}
        }
    }

    /// The peer aborted the command of its IoReq `tag`: the IO is dropped
    /// and answered aborted if it has not started here (it waits behind an
    /// ORDERED task, or for the COMPARE AND WRITE lock); otherwise its
    /// answer comes when it completes.
    fn abort(&mut self, tag: u32, lun_id: u32) {
        if let Some(i) = self.caws.iter().position(|c| !c.reading && c.tag == tag && c.lun_id == lun_id) {
            self.caw_end(i, IoStatus::Aborted);
        } else if let Some(b) = crate::barrier::take_peer(cookie(tag, lun_id)) {
            self.held = self.held.saturating_sub(b.buf.len());
            drop(b);
            self.reply(tag, lun_id, IoStatus::Aborted);
        } else {
            return;
        }
        forward::ABORTED_FOR_PEER.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        if lio::ratelimit() {
            pr_info!("LUN {}: the peer aborted its IO (tag {}) before it ran here: dropped\n", lun_id, tag);
        }
    }

    fn reply(&mut self, tag: u32, lun_id: u32, status: IoStatus) {
        if self.replies.push(IoDone { tag, lun_id, status }, GFP_KERNEL).is_err() {
            // The peer's command fails by its own timeout.
            pr_err!("LUN {}: no memory for the answer to the peer's IO\n", lun_id);
        }
    }

    /// A buffer for `len` bytes of the peer's IO, within the budget.
    fn buffer(&mut self, len: u32) -> core::result::Result<PageBuf, IoStatus> {
        let len = len as usize;
        if self.held.saturating_add(len) > MAX_HELD {
            return Err(IoStatus::Busy);
        }
        let buf = PageBuf::new(len).map_err(|_| IoStatus::Busy)?;
        self.held += len;
        Ok(buf)
    }

    fn start(&mut self, q: &IoReq) -> core::result::Result<(), IoStatus> {
        // In mode 1 (shared storage) the secondary does its own IO, but
        // hands COMPARE AND WRITE over, so that one lock covers both nodes.
        let allowed = match NODE.mode() {
            HaMode::Proxy => true,
            HaMode::SerializeOnly => q.op == IoOp::CompareAndWrite,
            HaMode::ActiveStandby => false,
        };
        if !allowed {
            // Both nodes have the same mode (checked at login): a peer
            // that asks anyway is not obeyed.
            if lio::ratelimit() {
                pr_err!("LUN {}: the peer asked for IO this mode does not forward (ha_mode {}): refused\n", q.lun_id, NODE.mode() as u8);
            }
            return Err(IoStatus::NotHeld);
        }
        let c = cookie(q.tag, q.lun_id);
        // IO that moves no data: submitted at once.
        let bare = |op: BufOp| {
            let (io, _) = lun_io(q.lun_id, q.sector, q.sectors())?;
            let b = BufIo::new(c, op, PageBuf::new(0).map_err(|_| IoStatus::Busy)?).map_err(|_| IoStatus::Busy)?;
            bufio::submit(b, io, q.sector).map_err(|_| IoStatus::Busy)
        };
        match q.op {
            IoOp::Flush => bare(BufOp::Flush),
            IoOp::Discard => bare(BufOp::Discard(q.sectors())),
            IoOp::WriteZeroes => bare(BufOp::WriteZeroes(q.sectors())),
            IoOp::Read => {
                let (io, _) = lun_io(q.lun_id, q.sector, q.sectors())?;
                let buf = self.buffer(q.len)?;
                let b = match BufIo::new(c, BufOp::Read, buf) {
                    Ok(b) => b,
                    Err(_) => {
                        self.held -= q.len as usize;
                        return Err(IoStatus::Busy);
                    }
                };
                crate::barrier::peer(b, io, q.sector, attr(q)).map_err(|b| {
                    self.held -= b.buf.len();
                    IoStatus::Busy
                })
            }
            IoOp::Write | IoOp::WriteSame | IoOp::CompareAndWrite => {
                // Checked now so that a refused write's data is not kept.
                let (io, bs) = lun_io(q.lun_id, q.sector, q.sectors())?;
                drop(io);
                if self.filling.iter().any(|f| f.tag == q.tag) {
                    return Err(IoStatus::Blk(blk::IOERR));
                }
                // WRITE SAME: one logical block of data, for whole blocks.
                let whole = q.sectors() % u64::from(bs / 512).max(1) == 0;
                let (len, fill) = match q.op {
                    IoOp::WriteSame if whole => (bs, Fill::Same(q.sectors())),
                    IoOp::CompareAndWrite if whole => (2 * q.len, Fill::Caw),
                    IoOp::WriteSame | IoOp::CompareAndWrite => return Err(IoStatus::Blk(blk::IOERR)),
                    _ => (q.len, Fill::Write),
                };
                let buf = self.buffer(len)?;
                let f = Filling { tag: q.tag, lun_id: q.lun_id, sector: q.sector, fua: q.fua, attr: attr(q), fill, buf, got: 0 };
                self.filling.push(f, GFP_KERNEL).map_err(|_| {
                    self.held -= len as usize;
                    IoStatus::Busy
                })
            }
        }
    }

    fn write_data(&mut self, d: &IoData, data: &[u8]) {
        let Some(i) = self.filling.iter().position(|f| f.tag == d.tag) else {
            if lio::ratelimit() {
                pr_warn!("interlink: write data for no waiting IO (tag {}, offset {}): ignored\n", d.tag, d.offset);
            }
            return;
        };
        let ok = match self.filling.get_mut(i) {
            Some(f) => d.offset as usize == f.got && f.buf.write_at(f.got, data).is_ok(),
            None => return,
        };
        if let Some(f) = self.filling.get_mut(i) {
            if ok {
                f.got += data.len();
                if f.got < f.buf.len() {
                    return;
                }
            }
        }
        let Ok(f) = self.filling.remove(i) else { return };
        let len = f.buf.len();
        if !ok {
            pr_err!("LUN {}: the peer's write data came out of order (tag {}, offset {}): the write fails\n", f.lun_id, f.tag, d.offset);
            self.held -= len;
            self.reply(f.tag, f.lun_id, IoStatus::Blk(blk::IOERR));
            return;
        }
        let (tag, lun_id, attr) = (f.tag, f.lun_id, f.attr);
        let (op, sectors) = match f.fill {
            Fill::Same(n) => (BufOp::WriteSame(f.fua, n), n),
            Fill::Write => (BufOp::Write(f.fua), (len / 512) as u64),
            Fill::Caw => {
                let c = Caw {
                    tag,
                    lun_id,
                    sector: f.sector,
                    fua: f.fua,
                    data: f.buf,
                    deadline: sys::now_ms().saturating_add(CAW_WAIT_MS),
                    reading: false,
                };
                if self.caws.push(c, GFP_KERNEL).is_err() {
                    self.held -= len;
                    self.reply(tag, lun_id, IoStatus::Busy);
                    return;
                }
                self.caw_retry();
                return;
            }
        };
        let r = lun_io(lun_id, f.sector, sectors).and_then(|(io, _)| {
            let b = BufIo::new(cookie(tag, lun_id), op, f.buf).map_err(|_| IoStatus::Busy)?;
            match op {
                // Writes are ordered around ORDERED tasks; WRITE SAME is not.
                BufOp::Write(_) => crate::barrier::peer(b, io, f.sector, attr),
                _ => bufio::submit(b, io, f.sector),
            }
            .map_err(|_| IoStatus::Busy)
        });
        if let Err(st) = r {
            self.held -= len;
            self.reply(tag, lun_id, st);
        }
    }

    /// Starts the COMPARE AND WRITEs whose lock is free (their read, under
    /// the lock); answers busy those that waited too long.
    fn caw_retry(&mut self) {
        let now = sys::now_ms();
        let mut i = 0;
        while i < self.caws.len() {
            let Some(c) = self.caws.get(i) else { break };
            if c.reading {
                i += 1;
                continue;
            }
            let (tag, lun_id, sector, len, deadline) = (c.tag, c.lun_id, c.sector, c.len(), c.deadline);
            let r = lun_caw(lun_id, sector, (len / 512) as u64).and_then(|got| {
                let Some((io, lock)) = got else { return Ok(false) };
                let buf = PageBuf::new(len).map_err(|_| IoStatus::Busy)?;
                let mut b = BufIo::new(cookie(tag, lun_id), BufOp::CawRead, buf).map_err(|_| IoStatus::Busy)?;
                b.hold = Some(lock);
                bufio::submit(b, io, sector).map_err(|_| IoStatus::Busy)?;
                Ok(true)
            });
            match r {
                Ok(true) => {
                    self.held += len;
                    if let Some(c) = self.caws.get_mut(i) {
                        c.reading = true;
                    }
                    i += 1;
                }
                Ok(false) if now < deadline => i += 1,
                Ok(false) => {
                    pr_warn!("LUN {}: the peer's COMPARE AND WRITE waited {} ms for the lock: answered busy\n", lun_id, CAW_WAIT_MS);
                    self.caw_end(i, IoStatus::Busy);
                }
                Err(st) => self.caw_end(i, st),
            }
        }
    }

    /// Ends the COMPARE AND WRITE at `i` of the list with `status` sent
    /// now (a write submitted instead answers at its completion: `None`).
    fn caw_end(&mut self, i: usize, status: impl Into<Option<IoStatus>>) {
        let Ok(c) = self.caws.remove(i) else { return };
        self.held = self.held.saturating_sub(c.data.len());
        if let Some(st) = status.into() {
            self.reply(c.tag, c.lun_id, st);
        }
    }

    /// The read of a COMPARE AND WRITE completed (`b` holds the lock):
    /// compares, then writes under the same lock, or answers.
    fn caw_read_done(&mut self, mut b: KBox<BufIo>) {
        self.held = self.held.saturating_sub(b.buf.len());
        let Some(i) = self.caws.iter().position(|c| c.reading && cookie(c.tag, c.lun_id) == b.cookie) else {
            // Its connection's state is gone: the lock goes with `b`.
            return;
        };
        if b.status != 0 {
            let st = IoStatus::Blk(b.status.min(63));
            self.caw_end(i, st);
            return;
        }
        let Some(c) = self.caws.get(i) else { return };
        let len = c.len();
        let diff = match self.chunk.get_mut(..IO_CHUNK) {
            Some(scratch) => first_difference(&b.buf, &c.data, scratch),
            None => Some(0),
        };
        if let Some(off) = diff {
            // Bounded by the range (≤ MAX_CAW_BYTES).
            self.caw_end(i, IoStatus::Miscompare(off as u32));
            return;
        }
        // The data to write replaces what was read, in the same buffer.
        let (lun_id, sector, fua) = (c.lun_id, c.sector, c.fua);
        let mut moved = Ok(());
        let mut off = 0;
        while off < len && moved.is_ok() {
            let n = (len - off).min(IO_CHUNK);
            moved = match self.chunk.get_mut(..n) {
                Some(piece) => c.data.read_at(len + off, piece).and_then(|()| b.buf.write_at(off, piece)),
                None => Err(EINVAL),
            };
            off += n;
        }
        if moved.is_err() {
            self.caw_end(i, IoStatus::Blk(blk::IOERR));
            return;
        }
        let r = lun_io(lun_id, sector, (len / 512) as u64).and_then(|(io, _)| {
            b.op = BufOp::Write(fua);
            bufio::submit(b, io, sector).map_err(|_| IoStatus::Busy)
        });
        match r {
            Ok(()) => {
                self.held += len;
                self.caw_end(i, None);
            }
            Err(st) => self.caw_end(i, st),
        }
    }

    /// Sends this node's forwarded commands (with their data), answers to
    /// the peer's IO that failed at once, and the peer's completed IO
    /// (with read data).
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn flush(&mut self, s: &mut Session<'_, KernelMac>, tx: &mut impl Tx) -> core::result::Result<(), LinkError> {
        // Completed IO first: a compare's read may end in an answer below.
        let mut done = core::mem::take(&mut self.done);
        bufio::take_done(&mut done);
        let mut i = 0;
        while i < done.len() {
            if done.get(i).is_some_and(|b| b.op == BufOp::CawRead) {
                if let Ok(b) = done.remove(i) {
                    self.caw_read_done(b);
                }
            } else {
                i += 1;
            }
        }
        self.caw_retry();
        forward::take_outbox(&mut self.outgoing);
        for o in self.outgoing.iter() {
            s.send_when_up(&o.msg, sys::now_ms(), tx)?;
            if let Message::IoReq(q) = o.msg {
                let mut off = 0usize;
                for piece in o.data.chunks(IO_CHUNK) {
                    s.send_data_when_up(q.tag, off as u32, piece, sys::now_ms(), tx)?;
                    off += piece.len();
                }
            }
        }
        self.outgoing.clear();
        for r in self.replies.iter() {
            s.send_when_up(&Message::IoDone(*r), sys::now_ms(), tx)?;
        }
        self.replies.clear();
        let mut result = Ok(());
        for b in done.iter() {
            self.held = self.held.saturating_sub(b.buf.len());
            if result.is_ok() {
                result = answer(s, tx, b, &mut self.chunk);
            }
        }
        done.clear();
        self.done = done;
        result
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The peer's IO waiting behind an ORDERED task goes; this node's
        // runs.
        crate::barrier::offline();
        // The COMPARE AND WRITE locks of this connection's IO are released
        // here: once the reads holding one have completed, the done list
        // (and with it their locks) is emptied.
        bufio::wait_holding();
        bufio::drain();
    }
}

/// The task attribute of the peer's IO `q`.
fn attr(q: &IoReq) -> Attr {
    match (q.ordered, q.head) {
        (true, _) => Attr::Ordered,
        (_, true) => Attr::Head,
        _ => Attr::Simple,
    }
}

/// Sends the answer to the peer's IO `b`: a read's data, then IoDone.
fn answer(
    s: &mut Session<'_, KernelMac>,
    tx: &mut impl Tx,
    b: &BufIo,
    chunk: &mut KVVec<u8>,
) -> core::result::Result<(), LinkError> {
    let (tag, lun_id) = split(b.cookie);
    let status = match b.status {
        0 => IoStatus::Ok,
        v @ 1..=63 => IoStatus::Blk(v),
        _ => IoStatus::Blk(blk::IOERR),
    };
    if b.op == BufOp::Read && status == IoStatus::Ok {
        let mut off = 0usize;
        while off < b.buf.len() {
            let n = (b.buf.len() - off).min(IO_CHUNK);
            let Some(piece) = chunk.get_mut(..n) else { break };
            if b.buf.read_at(off, piece).is_err() {
                break;
            }
            s.send_data_when_up(tag | ANSWER_BIT, off as u32, piece, sys::now_ms(), tx)?;
            off += n;
        }
    }
    if status != IoStatus::Ok && lio::ratelimit() {
        pr_err!("LUN {}: the peer's IO failed here: block status {:?}\n", lun_id, status);
    }
    s.send_when_up(&Message::IoDone(IoDone { tag, lun_id, status }), sys::now_ms(), tx).map(|_| ())
}
