"""Active/Active on shared storage (issue 6, ha_mode=1): both nodes hold
the shared disk (/dev/vdc, one image in both guests) and do their own IO
on it; node A, the primary, orders the two nodes' reads and writes (node
B asks with OrderReq before each one and reports its end with OrderDone).
Checked through real iSCSI paths from the initiator: data written through
one node reads back identical through the other, fio verifies through B
alone and through both paths at once (multibus), overlapping writes
through both nodes at once are held back by the primary and never end as
a mix, WRITE SAME and UNMAP through B are ordered too, commands waiting
at B when the link drops complete, ORDERED tasks are ordered over the
whole LUN (through a minimal iSCSI initiator), COMPARE AND
WRITE through both nodes has exactly one winner per round, and a planned
switch under fio keeps both paths serving."""
import re
import time

import pytest

import vm
from conftest import PATH_A, PATH_B, full_only
from hapair import held, task, wait_paths
from test_ha_proxy import (STATS, caw_race, configured_pair, fio, link_loss_with_io_in_flight, planned_switch_under_io, stat,
                           written_through_one_read_through_the_other)


@pytest.fixture(scope="module")
def sh(trio, accel):
    """One pair for the whole module (A primary, B secondary, mode 1,
    linked; the initiator on one map with group_by_prio); each test leaves
    it so, except the last (the planned switch)."""
    yield from configured_pair(trio, accel, 1)


def settled(g, timeout: float = 10):
    """Waits until nothing waits for an order on `g`."""
    t0 = time.time()
    while stat(g, "order_waiting") != 0:
        assert time.time() - t0 < timeout, g.run(f"cat {STATS}; dmesg | tail -20").out
        time.sleep(0.2)


def writes(ini, dev: str) -> int:
    return int(ini.run(f"cat /sys/block/{dev}/stat").out.split()[4])


def test_both_nodes_do_their_own_io_ordered_by_the_primary(sh):
    a, b, ini = sh.a, sh.b, sh.ini
    da, db = sh.devs["nodea"], sh.devs["nodeb"]
    # A's group Active/Optimized (prio 50), B's Active/Non-optimized (10).
    wait_paths(ini, {da: ("ready", 50), db: ("ready", 10)})
    # Both nodes hold the shared disk.
    assert held(a) and held(b)
    asked, forwarded = stat(b, "order_requests"), stat(b, "proxied_to_peer")
    written_through_one_read_through_the_other(ini, da, db)
    job = fio(ini, f"/dev/{db}", "8M")
    print(f"\n[shared] fio through B alone: {job['write_kib']} KiB written, {job['read_kib']} KiB read, "
          f"0 errors, verified")
    ini.run("udevadm settle --timeout=30", check=False)
    settled(b)
    # B asked A for each read and write, and did them itself: nothing was
    # forwarded.
    n = stat(b, "order_requests") - asked
    assert n >= 2 * 4 + job["write_kib"] // 1024, n
    assert stat(b, "proxied_to_peer") == forwarded
    # Both paths at once (multibus).
    sh.regroup("multibus")
    try:
        wait_paths(ini, {da: ("ready", 50), db: ("ready", 10)})
        before = {d: writes(ini, d) for d in (da, db)}
        fio(ini, sh.mpath, "8M", "--numjobs=2 --offset_increment=40M")
        after = {d: writes(ini, d) for d in (da, db)}
    finally:
        sh.regroup("group_by_prio")
    assert after[da] > before[da] and after[db] > before[db], (before, after)
    settled(a)
    settled(b)
    print(f"[shared] B asked A to order {n} IOs, forwarded none; multibus fio: writes through A "
          f"{after[da] - before[da]}, through B {after[db] - before[db]}; 0 errors, verified")


ROUNDS = 20 if vm.FULL else 10


def test_overlapping_writes_through_both_nodes_never_mix(sh):
    """Writes through A and through B to the same blocks at once: A holds
    the later one back until the earlier one is done (order_waits grows),
    and each pair of overlapping 256 KiB writes leaves the overlap as one
    of them wrote it, never a mix of both."""
    a, b, ini = sh.a, sh.b, sh.ini
    da, db = sh.devs["nodea"], sh.devs["nodeb"]
    wait_paths(ini, {da: ("ready", 50), db: ("ready", 10)})
    waits = stat(a, "order_waits")
    # Contention: random 16k writes through both nodes over the same 2 MiB.
    ini.run("fio --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=16k --size=2M "
            f"--offset=64M --time_based --runtime=8 --name=a --filename=/dev/{da} "
            f"--name=b --filename=/dev/{db} --output-format=terse > /tmp/fio.race", timeout=120)
    held_back = stat(a, "order_waits") - waits
    assert held_back > 0, a.run(f"cat {STATS}").out
    settled(a)
    settled(b)
    # 0xaa through A over [X, X+256k), 0xbb through B over [X+128k, X+384k),
    # started together: the overlap holds one value.
    ini.run("head -c 262144 /dev/zero | tr '\\0' '\\252' > /tmp/aa; "
            "head -c 262144 /dev/zero | tr '\\0' '\\273' > /tmp/bb")
    # One shell loop on the initiator (a guest command per step is slow
    # under TCG): each round prints the checksums of A's part, the overlap
    # as read through A and through B, and B's part (128 KiB each).
    sums = {ini.run(f"head -c 131072 /tmp/{k} | md5sum").out.split()[0]: k for k in ("aa", "bb")}
    script = ("v() { dd if=/dev/$1 bs=128k skip=$(($2 / 128)) count=1 iflag=direct status=none | md5sum | cut -c1-32; }; "
              f"for r in $(seq 0 {ROUNDS - 1}); do x=$((131072 + r * 1024)); "
              f"dd if=/tmp/aa of=/dev/{da} bs=256k seek=$((x / 256)) oflag=direct status=none & "
              f"dd if=/tmp/bb of=/dev/{db} bs=128k seek=$((x / 128 + 1)) oflag=direct status=none & wait; "
              f"echo \"$(v {da} $x) $(v {da} $((x + 128))) $(v {db} $((x + 128))) $(v {db} $((x + 256)))\"; done")
    rounds = [[sums.get(h, "mixed") for h in line.split()]
              for line in ini.run(script, timeout=300).out.strip().splitlines()]
    assert len(rounds) == ROUNDS, rounds
    won = {"aa": 0, "bb": 0}
    for rnd, (a_part, over_a, over_b, b_part) in enumerate(rounds):
        assert over_a in won, ("the overlap holds a mix of both writes", rnd)
        assert over_b == over_a, ("the nodes read the overlap differently", rnd, over_a, over_b)
        # The parts only one wrote hold that one's data.
        assert (a_part, b_part) == ("aa", "bb"), (rnd, a_part, b_part)
        won[over_a] += 1
    print(f"\n[shared] overlapping writes through both nodes: A held back {held_back} IOs; "
          f"{ROUNDS} overlapping pairs, never mixed (A's data last {won['aa']}, B's {won['bb']})")


def sg_of(g, dev: str) -> str:
    """The SCSI generic node of block device `dev` (IO through it is not
    counted in the block device's statistics, nor probed by udev)."""
    return "/dev/" + g.run(f"ls /sys/block/{dev}/device/scsi_generic").out.split()[0]


def requests(g, dev: str) -> int:
    """Reads and writes completed through block device `dev`."""
    f = g.run(f"cat /sys/block/{dev}/stat").out.split()
    return int(f[0]) + int(f[4])


@full_only
def test_write_same_and_unmap_are_ordered_across_both_nodes(sh):
    """WRITE SAME and UNMAP received by B run on B's own device under an
    order of A's, like B's reads and writes: B asks A once per WRITE SAME
    and once per UNMAP descriptor (order_requests grows by exactly that
    beside B's reads and writes), and WRITE SAMEs through B raced against
    writes through A over the same 256 KiB end as one of them, never a
    mix."""
    a, b, ini = sh.a, sh.b, sh.ini
    da, db = sh.devs["nodea"], sh.devs["nodeb"]
    wait_paths(ini, {da: ("ready", 50), db: ("ready", 10)})
    settled(a)
    settled(b)
    bs = int(ini.run(f"blockdev --getss /dev/{db}").out)
    sg, n, x = sg_of(ini, db), 262144 // bs, 196608  # 256 KiB at 192 MiB
    lba = x * 1024 // bs
    ini.run(f"head -c {bs} /dev/zero | tr '\\0' '\\273' > /tmp/bblk; "
            "head -c 262144 /dev/zero | tr '\\0' '\\252' > /tmp/aa")
    # One WRITE SAME, then two UNMAPs (LIO takes one descriptor per UNMAP
    # from a backing device that discards), through B.
    asked, rw = stat(b, "order_requests"), requests(ini, db)
    r = ini.run(f"sg_write_same --16 --in=/tmp/bblk --lba={lba} --num={n} {sg} 2>&1", check=False)
    assert r.rc == 0, r.out + b.run("dmesg | tail -10").out
    for at in (lba, lba + n):
        r = ini.run(f"sg_unmap --force --lba={at} --num=8 {sg} 2>&1", check=False)
        assert r.rc == 0, r.out + b.run("dmesg | tail -10").out
    settled(b)
    extra = stat(b, "order_requests") - asked - (requests(ini, db) - rw)
    assert extra == 3, (extra, b.run(f"cat {STATS}").out)
    # The race: 8 writes of 0xaa through A and 8 WRITE SAMEs of 0xbb through
    # B over the same 256 KiB, the two series at once, in one shell loop on
    # the initiator; A must hold some back (the two did overlap).
    sums = {ini.run("md5sum < /tmp/aa").out.split()[0]: "aa",
            ini.run(f"for i in $(seq {n}); do cat /tmp/bblk; done | md5sum").out.split()[0]: "bb"}
    waits = stat(a, "order_waits")
    script = (f"for r in $(seq 0 {ROUNDS - 1}); do k=$(({x} + r * 1024)); l=$((k * 1024 / {bs})); "
              f"(for i in 1 2 3 4 5 6 7 8; do dd if=/tmp/aa of=/dev/{da} bs=256k seek=$((k / 256)) "
              f"oflag=direct status=none; done) & "
              f"(for i in 1 2 3 4 5 6 7 8; do sg_write_same --16 --in=/tmp/bblk --lba=$l --num={n} {sg}; "
              f"done) & wait; "
              f"dd if=/dev/{da} bs=256k skip=$((k / 256)) count=1 iflag=direct status=none | md5sum | cut -c1-32; done")
    out = ini.run(script, timeout=300).out.strip().splitlines()
    got = [sums.get(h, "mixed") for h in out]
    assert len(got) == ROUNDS and "mixed" not in got, got
    settled(a)
    settled(b)
    assert stat(a, "order_waits") > waits, "the writes and WRITE SAMEs never overlapped"
    print(f"\n[shared] B asked A for 1 WRITE SAME and 2 UNMAPs (3 orders); {ROUNDS} rounds of 8 WRITE SAMEs "
          f"through B against 8 writes through A: never mixed (A's data last {got.count('aa')}, "
          f"B's {got.count('bb')}; A held back {stat(a, 'order_waits') - waits} IOs)")


def test_ordered_tasks_are_ordered_over_the_whole_lun(sh):
    """The read or write of an ORDERED task is ordered as a write over the
    whole LUN: through B, B asks A with access "all" (B's order_barriers
    grows by one per command); through A, A enters it in its own table (A's
    grows). SIMPLE and HEAD OF QUEUE commands order their range only. The
    data is right either way."""
    a, b, ini = sh.a, sh.b, sh.ini
    da = sh.devs["nodea"]
    settled(a)
    settled(b)
    bs = int(ini.run(f"blockdev --getss /dev/{da}").out)
    lba = 300 * 1048576 // bs // 2  # 150 MiB
    ini.run(f"head -c 4096 /dev/urandom > /tmp/t1; head -c 4096 /dev/urandom > /tmp/t2; "
            f"dd if=/tmp/t1 of=/dev/{da} bs=4096 seek={lba * bs // 4096} oflag=direct status=none")
    want1 = ini.run("md5sum < /tmp/t1").out.split()[0]
    want2 = ini.run("md5sum < /tmp/t2").out.split()[0]
    n = 4096 // bs
    barriers = {g.name: stat(g, "order_barriers") for g in (a, b)}

    def grew():
        return {g.name: stat(g, "order_barriers") - barriers[g.name] for g in (a, b)}
    assert task(ini, PATH_B, "simple", "read", lba, n) == f"status 0x00 md5 {want1} bytes 4096"
    assert task(ini, PATH_B, "head", "read", lba, n) == f"status 0x00 md5 {want1} bytes 4096"
    assert grew() == {"nodea": 0, "nodeb": 0}, grew()
    assert task(ini, PATH_B, "ordered", "read", lba, n) == f"status 0x00 md5 {want1} bytes 4096"
    assert grew() == {"nodea": 0, "nodeb": 1}, grew()
    assert task(ini, PATH_B, "ordered", "write", lba, "/tmp/t2") == f"status 0x00 md5 {want2} bytes 4096"
    assert grew() == {"nodea": 0, "nodeb": 2}, grew()
    got = ini.run(f"dd if=/dev/{da} bs=4096 skip={lba * bs // 4096} count=1 iflag=direct status=none | md5sum").out
    assert got.split()[0] == want2
    assert task(ini, PATH_A, "ordered", "read", lba, n) == f"status 0x00 md5 {want2} bytes 4096"
    assert grew() == {"nodea": 1, "nodeb": 2}, grew()
    settled(a)
    settled(b)
    print(f"\n[shared] ORDERED READ and WRITE through B asked A for whole-LUN orders (2), through A one; "
          f"SIMPLE and HEAD OF QUEUE none; data right")


def test_link_loss_with_io_waiting_for_an_order(sh):
    link_loss_with_io_in_flight(sh, "order_requests", "order_waiting")


def test_compare_and_write_race_across_both_nodes(sh):
    caw_race(sh, 10 if vm.FULL else 6, "shared")
    # B's COMPARE AND WRITEs were done by A; B still holds the disk.
    assert held(sh.b)
    assert re.search(r"^order_waiting: 0$", sh.b.run(f"cat {STATS}").out, re.M)


@full_only
def test_planned_switch_under_io_keeps_both_paths_serving(sh):
    planned_switch_under_io(sh, "shared")
    # B now orders: IO through A (now secondary) asks B.
    asked = stat(sh.a, "order_requests")
    sh.ini.run(f"dd if=/dev/{sh.devs['nodea']} of=/dev/null bs=64k count=8 iflag=direct status=none")
    assert stat(sh.a, "order_requests") > asked
