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

use kernel::prelude::*;

use crate::configfs::NODE;
use crate::core_logic::control::Role;
use crate::core_logic::scsi::alua::HaMode;
use crate::core_logic::link::{LinkError, Session, Tx};
use crate::core_logic::scsi::io::blk;
use crate::core_logic::wire::msg::{IoData, IoDone, IoOp, IoReq, IoStatus, Message, IO_CHUNK};
use crate::forward::{self, Outgoing, ANSWER_BIT};
use crate::lio::{
    self,
    bufio::{self, BufIo, BufOp, PageBuf},
    IoRef,
};
use crate::sys::{self, KernelMac};

/// Bytes of the peer's IO this node holds at once.
const MAX_HELD: usize = 64 << 20;

/// A write of the peer's waiting for its data.
struct Filling {
    tag: u32,
    lun_id: u32,
    sector: u64,
    fua: bool,
    /// Sectors of a WRITE SAME (its buffer is one logical block).
    same: Option<u64>,
    buf: PageBuf,
    got: usize,
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
        let io = d.device().io_begin().ok_or(IoStatus::NotHeld)?;
        Ok((io, bs))
    })
}

/// One connection's proxy state (both sides: the primary's IO for the
/// peer, and the sending of this node's forwarded commands).
pub(crate) struct Proxy {
    filling: KVec<Filling>,
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
        Ok(Proxy { filling: KVec::new(), replies: KVec::new(), done: KVec::new(), outgoing: KVec::new(), chunk, held: 0 })
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
            Message::IoDone(d) => {
                if !forward::io_done(d) && lio::ratelimit() {
                    pr_warn!("LUN {}: answer for no waiting IO (tag {}): ignored\n", d.lun_id, d.tag);
                }
            }
            _ => {}
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
        if NODE.mode() != HaMode::Proxy {
            // Both nodes have the same mode (checked at login): a peer
            // that asks anyway is not obeyed.
            if lio::ratelimit() {
                pr_err!("LUN {}: the peer asked for IO while not in proxy mode (ha_mode 2): refused\n", q.lun_id);
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
                bufio::submit(b, io, q.sector).map_err(|b| {
                    self.held -= b.buf.len();
                    IoStatus::Busy
                })
            }
            IoOp::Write | IoOp::WriteSame => {
                // Checked now so that a refused write's data is not kept.
                let (io, bs) = lun_io(q.lun_id, q.sector, q.sectors())?;
                drop(io);
                if self.filling.iter().any(|f| f.tag == q.tag) {
                    return Err(IoStatus::Blk(blk::IOERR));
                }
                // WRITE SAME: one logical block of data, for whole blocks.
                let (len, same) = match q.op {
                    IoOp::WriteSame if q.sectors() % u64::from(bs / 512).max(1) == 0 => (bs, Some(q.sectors())),
                    IoOp::WriteSame => return Err(IoStatus::Blk(blk::IOERR)),
                    _ => (q.len, None),
                };
                let buf = self.buffer(len)?;
                let f = Filling { tag: q.tag, lun_id: q.lun_id, sector: q.sector, fua: q.fua, same, buf, got: 0 };
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
        let (tag, lun_id) = (f.tag, f.lun_id);
        let (op, sectors) = match f.same {
            Some(n) => (BufOp::WriteSame(f.fua, n), n),
            None => (BufOp::Write(f.fua), (len / 512) as u64),
        };
        let r = lun_io(lun_id, f.sector, sectors).and_then(|(io, _)| {
            let b = BufIo::new(cookie(tag, lun_id), op, f.buf).map_err(|_| IoStatus::Busy)?;
            bufio::submit(b, io, f.sector).map_err(|_| IoStatus::Busy)
        });
        if let Err(st) = r {
            self.held -= len;
            self.reply(tag, lun_id, st);
        }
    }

    /// Sends this node's forwarded commands (with their data), answers to
    /// the peer's IO that failed at once, and the peer's completed IO
    /// (with read data).
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn flush(&mut self, s: &mut Session<'_, KernelMac>, tx: &mut impl Tx) -> core::result::Result<(), LinkError> {
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
        let mut done = core::mem::take(&mut self.done);
        bufio::take_done(&mut done);
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
