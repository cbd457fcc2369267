// SPDX-License-Identifier: GPL-2.0

//! Ordering of block IO across the two nodes in serialize-only mode
//! (`ha_mode=1`, shared storage; freebsd-ctl-ha-behaviour.md §1.2, §4
//! SERIALIZE/FINISH_IO).
//!
//! Both nodes do their IO on the same backing device. The primary of a LUN
//! keeps this table: every IO it runs itself (side [`Side::Local`]) and
//! every IO the secondary asked to run (side [`Side::Remote`], one
//! `OrderReq` each). An IO may run when no IO of the *other* side that
//! overlaps its range is running, unless both only read; otherwise it
//! waits, in arrival order, behind the IO it overlaps and behind the other
//! side's waiting IO it overlaps (so that neither side starves the other).
//! IO of one side is not ordered against IO of the same side: on one node
//! the initiators' own SIMPLE tasks are not ordered either (SAM-5 §8.6),
//! so overlapping writes through the two nodes end, block for block, as
//! one of them wrote, never as a mix.
//!
//! The table has a fixed room ([`ROOM`] running, [`ROOM`] waiting); a
//! request beyond it is refused ([`Admit::Full`]) and answered busy.

/// IOs of each kind (running, waiting) the table holds at once.
pub(crate) const ROOM: usize = 512;

/// Which node an IO runs on, from the primary's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The primary's own IO.
    Local,
    /// The secondary's IO (its `OrderReq` tag).
    Remote,
}

/// One IO: the range of 512-byte sectors `start..end` of a LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Io {
    /// Which node runs it.
    pub(crate) side: Side,
    /// The caller's name for it, unique among its side's IO in the table.
    pub(crate) id: u64,
    /// The LUN's HA identity.
    pub(crate) lun_id: u32,
    /// First sector.
    pub(crate) start: u64,
    /// Sector after the last.
    pub(crate) end: u64,
    /// Whether it writes.
    pub(crate) write: bool,
}

impl Io {
    /// Whether `self` and `o` may not run at once: other sides, one LUN,
    /// overlapping ranges, not both reads.
    fn conflicts(&self, o: &Io) -> bool {
        self.side != o.side
            && self.lun_id == o.lun_id
            && self.start < o.end
            && o.start < self.end
            && (self.write || o.write)
    }
}

/// The answer to [`Order::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It may run now; it is recorded as running.
    Go,
    /// It waits; [`Order::next_ready`] hands it back when it may run.
    Wait,
    /// No room: refused, nothing recorded.
    Full,
}

/// A list of at most [`ROOM`] IOs, in arrival order.
struct List {
    ios: [Io; ROOM],
    len: usize,
}

const NONE: Io = Io { side: Side::Local, id: 0, lun_id: 0, start: 0, end: 0, write: false };

impl List {
    const fn new() -> List {
        List { ios: [NONE; ROOM], len: 0 }
    }

    fn as_slice(&self) -> &[Io] {
        self.ios.get(..self.len).unwrap_or(&[])
    }

    fn push(&mut self, io: Io) -> bool {
        match self.ios.get_mut(self.len) {
            Some(slot) => {
                *slot = io;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Removes the IO at `i`, keeping the order of the others.
    fn remove(&mut self, i: usize) -> Option<Io> {
        let io = *self.as_slice().get(i)?;
        self.ios.copy_within(i + 1..self.len, i);
        self.len -= 1;
        Some(io)
    }

    /// Removes every IO of `side`; returns how many.
    fn drop_side(&mut self, side: Side) -> usize {
        let before = self.len;
        let mut kept = 0;
        for i in 0..self.len {
            let Some(&io) = self.ios.get(i) else { break };
            if io.side != side {
                if let Some(slot) = self.ios.get_mut(kept) {
                    *slot = io;
                }
                kept += 1;
            }
        }
        self.len = kept;
        before - kept
    }
}

/// The primary's ordering table for all its LUNs.
pub(crate) struct Order {
    running: List,
    waiting: List,
}

impl Order {
    /// An empty table.
    pub(crate) const fn new() -> Order {
        Order { running: List::new(), waiting: List::new() }
    }

    /// Whether `io`, placed at `before` in the waiting list (its length for
    /// a new one), may run now.
    fn may_run(&self, io: &Io, before: usize) -> bool {
        let earlier = self.waiting.as_slice().get(..before).unwrap_or(&[]);
        !self.running.as_slice().iter().chain(earlier).any(|o| io.conflicts(o))
    }

    /// Asks for `io` to run (its range must not be empty).
    pub(crate) fn request(&mut self, io: Io) -> Admit {
        if self.may_run(&io, self.waiting.len) {
            if self.running.push(io) {
                Admit::Go
            } else {
                Admit::Full
            }
        } else if self.waiting.push(io) {
            Admit::Wait
        } else {
            Admit::Full
        }
    }

    /// The IO `id` of `side` ended (it ran, or it waited and was given
    /// up); `None` if the table does not know it.
    pub(crate) fn release(&mut self, side: Side, id: u64) -> Option<Io> {
        let find = |l: &List| l.as_slice().iter().position(|o| o.side == side && o.id == id);
        if let Some(i) = find(&self.running) {
            return self.running.remove(i);
        }
        let i = find(&self.waiting)?;
        self.waiting.remove(i)
    }

    /// The first waiting IO that may run now, moved to the running ones;
    /// call until `None` after each [`Order::release`] or [`Order::forget`].
    pub(crate) fn next_ready(&mut self) -> Option<Io> {
        if self.running.len >= ROOM {
            return None;
        }
        let i = (0..self.waiting.len).find(|&i| {
            self.waiting.as_slice().get(i).is_some_and(|io| self.may_run(io, i))
        })?;
        let io = self.waiting.remove(i)?;
        // Cannot fail: `running` has room (checked above).
        let _ = self.running.push(io);
        Some(io)
    }

    /// Forgets every IO of `side`, running or waiting (the link went down:
    /// the peer's orders no longer hold); returns how many.
    pub(crate) fn forget(&mut self, side: Side) -> usize {
        self.running.drop_side(side) + self.waiting.drop_side(side)
    }

    /// IOs running, of both sides.
    pub(crate) fn running(&self) -> usize {
        self.running.len
    }

    /// IOs waiting, of both sides.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len
    }

    /// Whether an IO `id` of `side` waits.
    pub(crate) fn is_waiting(&self, side: Side, id: u64) -> bool {
        self.waiting.as_slice().iter().any(|o| o.side == side && o.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn io(side: Side, id: u64, start: u64, end: u64, write: bool) -> Io {
        Io { side, id, lun_id: 1, start, end, write }
    }
    use Side::{Local as L, Remote as R};

    fn table() -> Box<Order> {
        Box::new(Order::new())
    }

    fn drain(t: &mut Order) -> Vec<(Side, u64)> {
        let mut v = Vec::new();
        while let Some(io) = t.next_ready() {
            v.push((io.side, io.id));
        }
        v
    }

    #[test]
    fn disjoint_and_same_side_run_at_once() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Go);
        assert_eq!(t.request(io(R, 1, 8, 16, true)), Admit::Go, "adjacent, not overlapping");
        assert_eq!(t.request(io(L, 2, 0, 8, true)), Admit::Go, "same side is not ordered");
        assert_eq!(t.request(io(R, 2, 100, 200, false)), Admit::Go);
        assert_eq!(t.running(), 4);
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn reads_share_writes_exclude() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, false)), Admit::Go);
        assert_eq!(t.request(io(R, 1, 4, 12, false)), Admit::Go, "two reads");
        assert_eq!(t.request(io(R, 2, 7, 8, true)), Admit::Wait, "write over a local read");
        assert_eq!(t.release(L, 1).map(|i| i.id), Some(1));
        assert_eq!(drain(&mut t), [(R, 2)]);
    }

    #[test]
    fn other_luns_do_not_conflict() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Go);
        let mut other = io(R, 1, 0, 8, true);
        other.lun_id = 2;
        assert_eq!(t.request(other), Admit::Go);
    }

    #[test]
    fn waiters_keep_their_order_and_cannot_be_overtaken() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Go);
        assert_eq!(t.request(io(R, 10, 0, 8, true)), Admit::Wait);
        // A local write over the waiting remote one queues behind it, even
        // though nothing of the other side runs over its range.
        assert_eq!(t.request(io(L, 2, 4, 6, true)), Admit::Wait);
        assert_eq!(t.request(io(R, 11, 50, 60, true)), Admit::Go);
        assert_eq!(drain(&mut t), []);
        t.release(L, 1);
        assert_eq!(drain(&mut t), [(R, 10)]);
        t.release(R, 10);
        assert_eq!(drain(&mut t), [(L, 2)]);
        t.release(L, 2);
        t.release(R, 11);
        assert_eq!((t.running(), t.waiting()), (0, 0));
    }

    #[test]
    fn a_whole_lun_write_is_a_barrier_between_the_nodes() {
        // The read or write of an ORDERED task (and a long WRITE SAME or
        // UNMAP range) as the primary orders it: 0..u64::MAX, a write.
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, false)), Admit::Go);
        assert_eq!(t.request(io(L, 2, 1 << 40, (1 << 40) + 8, true)), Admit::Go);
        assert_eq!(t.request(io(R, 1, 0, u64::MAX, true)), Admit::Wait, "behind every local IO");
        // Later local IO anywhere, even a read, waits behind it.
        assert_eq!(t.request(io(L, 3, 500, 501, false)), Admit::Wait);
        assert_eq!(t.request(io(R, 2, 9, 10, false)), Admit::Go, "same side is not ordered");
        t.release(L, 1);
        assert_eq!(drain(&mut t), []);
        t.release(L, 2);
        assert_eq!(drain(&mut t), [(R, 1)]);
        t.release(R, 1);
        assert_eq!(drain(&mut t), [(L, 3)]);
    }

    #[test]
    fn a_later_waiter_runs_when_its_own_conflict_ends() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Go);
        assert_eq!(t.request(io(L, 2, 100, 108, true)), Admit::Go);
        assert_eq!(t.request(io(R, 1, 0, 8, true)), Admit::Wait);
        assert_eq!(t.request(io(R, 2, 100, 108, true)), Admit::Wait);
        t.release(L, 2);
        assert_eq!(drain(&mut t), [(R, 2)]);
        assert!(t.is_waiting(R, 1));
    }

    #[test]
    fn forget_drops_one_side_and_frees_the_other() {
        let mut t = table();
        assert_eq!(t.request(io(R, 1, 0, 8, true)), Admit::Go);
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Wait);
        assert_eq!(t.request(io(R, 2, 0, 8, true)), Admit::Wait);
        assert_eq!(t.forget(R), 2);
        assert_eq!(drain(&mut t), [(L, 1)]);
        assert_eq!(t.release(R, 1), None, "forgotten");
    }

    #[test]
    fn release_of_a_waiter_and_unknown_ids() {
        let mut t = table();
        assert_eq!(t.request(io(L, 1, 0, 8, true)), Admit::Go);
        assert_eq!(t.request(io(R, 1, 0, 8, true)), Admit::Wait);
        assert_eq!(t.release(R, 1).map(|i| i.start), Some(0));
        assert_eq!(t.release(R, 1), None);
        assert_eq!(t.release(L, 99), None);
        assert_eq!(t.release(R, 1), None);
        assert_eq!((t.running(), t.waiting()), (1, 0));
    }

    #[test]
    fn full_table_refuses_without_recording() {
        let mut t = table();
        for i in 0..ROOM as u64 {
            assert_eq!(t.request(io(L, i, i * 8, i * 8 + 8, true)), Admit::Go);
        }
        assert_eq!(t.request(io(R, 1, 10_000_000, 10_000_008, true)), Admit::Full);
        for i in 0..ROOM as u64 {
            assert_eq!(t.request(io(R, i, 0, 8, true)), Admit::Wait);
        }
        assert_eq!(t.request(io(R, 9999, 0, 8, true)), Admit::Full);
        assert_eq!((t.running(), t.waiting()), (ROOM, ROOM));
        // Everything drains once the local IO ends.
        for i in 0..ROOM as u64 {
            t.release(L, i);
        }
        let mut n = 0;
        while let Some(io) = t.next_ready() {
            t.release(io.side, io.id);
            n += 1;
        }
        assert_eq!(n, ROOM);
        assert_eq!((t.running(), t.waiting()), (0, 0));
    }

    /// Random requests and releases: no two conflicting IOs ever run at
    /// once, and everything waiting runs once the rest has ended.
    #[test]
    fn random_schedules_never_run_conflicts() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut t = table();
        let mut running: Vec<Io> = Vec::new();
        let mut next_id = 0u64;
        for _ in 0..20_000 {
            if rnd(3) > 0 && t.waiting() < ROOM - 1 {
                next_id += 1;
                let side = if rnd(2) == 0 { L } else { R };
                let start = rnd(64);
                let new = io(side, next_id, start, start + 1 + rnd(16), rnd(3) > 0);
                match t.request(new) {
                    Admit::Go => running.push(new),
                    Admit::Wait => {}
                    Admit::Full => panic!("room"),
                }
            } else if !running.is_empty() {
                let i = rnd(running.len() as u64) as usize;
                let done = running.remove(i);
                assert_eq!(t.release(done.side, done.id), Some(done));
                while let Some(io) = t.next_ready() {
                    running.push(io);
                }
            }
            for (i, a) in running.iter().enumerate() {
                for b in &running[i + 1..] {
                    assert!(!a.conflicts(b), "{a:?} and {b:?} run at once");
                }
            }
            assert_eq!(t.running(), running.len());
        }
        while let Some(done) = running.pop() {
            t.release(done.side, done.id);
            while let Some(io) = t.next_ready() {
                running.push(io);
            }
        }
        assert_eq!((t.running(), t.waiting()), (0, 0));
    }
}
