"""Persistent reservations across the pair (issue 5, requirement 4): the
primary owns the PR state and sends a snapshot to the secondary whenever it
changes (and at link up); a PR OUT received by the secondary is executed by
the primary. Each node exports the LUN through its own tcm_loop port, so
node A's initiator (naa.5001405000000aa1, relative port 0x11) and node B's
(naa.5001405000000bb1, relative port 0x21) are two I_T nexuses of one
LUN."""
import re
import time

import pytest

import vm
from conftest import INTERLINK_A
from hapair import wait_in_flight, write_cdb
from test_ha_alua import link, lun_pair, make_lun_pair, wait_rtpg  # noqa: F401 (fixture)
from test_interlink import PORT, setattr_, wait_state
from conftest import full_only

INI_A = "5001405000000aa1"
INI_B = "5001405000000bb1"
NODE = "/sys/kernel/config/tcm_ha"
LINKED = {0x2: ("active/optimized", [0x11]), 0x3: ("standby", [0x21])}


def prout(g: vm.Guest, sg: str, args: str):
    return g.run(f"sg_persist -n --out {args} {sg} 2>&1", check=False)


def keys(g: vm.Guest, sg: str) -> tuple[list[str], str]:
    out = g.run(f"sg_persist -n --in -k {sg}").out
    return re.findall(r"0x([0-9a-f]+)", out.split("registered reservation key", 1)[-1]), out


def generation(out: str) -> str:
    m = re.search(r"PR generation=(0x[0-9a-f]+)", out)
    assert m, out
    return m.group(1)


def waiting(g: vm.Guest) -> int:
    m = re.search(r"^forwarded_waiting: (\d+)$", g.run(f"cat {NODE}/stats").out, re.M)
    assert m
    return int(m.group(1))


def test_pr_is_cluster_wide(lun_pair):
    """Registrations and the reservation made through either node are seen
    and enforced through both at once, with one PR generation."""
    a, b, (sa, _), (sb, _) = lun_pair
    link(a, b)
    wait_rtpg(b, sb, LINKED)
    # A is primary: executed there; B is secondary: forwarded to A.
    assert prout(a, sa, "--register --param-sark=0xa1").rc == 0
    r = prout(b, sb, "--register --param-sark=0xb1")
    assert r.rc == 0, r.out + b.run("dmesg | tail").out
    ka, outa = keys(a, sa)
    kb, outb = keys(b, sb)
    assert ka == kb == ["a1", "b1"], (outa, outb)
    assert generation(outa) == generation(outb) == "0x2", (outa, outb)
    # A Write Exclusive reservation taken through A is held as seen from B.
    assert prout(a, sa, "--reserve --param-rk=0xa1 --prout-type=1").rc == 0
    res = b.run(f"sg_persist -n --in -r {sb}").out
    assert "Key=0xa1" in res and "Write Exclusive" in res, res
    # READ FULL STATUS through B names both nexuses with their ports.
    full = b.run(f"sg_persist -n --in -s {sb}").out
    assert f"SAS address: 0x{INI_A}" in full and f"SAS address: 0x{INI_B}" in full, full
    assert "Relative port address: 0x11" in full and "Relative port address: 0x21" in full, full
    # B's nexus does not hold it: its RESERVE conflicts (decided by A), and
    # an unregistered key conflicts whichever node it comes through.
    r = prout(b, sb, "--reserve --param-rk=0xb1 --prout-type=1")
    assert r.rc != 0 and "onflict" in r.out, r.out
    r = prout(b, sb, "--release --param-rk=0x99 --prout-type=1")
    assert r.rc != 0 and "onflict" in r.out, r.out
    # A bad parameter list is refused by B itself, with A's sense.
    r = b.run(f"sg_raw -s 8 {sb} 5f 00 00 00 00 00 00 00 08 00 < /dev/zero 2>&1", check=False)
    assert r.rc != 0 and "Parameter list length error" in r.out, r.out
    # B preempts A: through B, executed by A; A's nexus gets its UA there.
    assert prout(b, sb, "--preempt --param-rk=0xb1 --param-sark=0xa1 --prout-type=1").rc == 0
    r = a.run(f"sg_raw {sa} 00 00 00 00 00 00 2>&1", check=False)
    assert r.rc != 0 and "Registrations preempted" in r.out, r.out
    for g, sg in ((a, sa), (b, sb)):
        assert keys(g, sg)[0] == ["b1"]
        res = g.run(f"sg_persist -n --in -r {sg}").out
        assert "Key=0xb1" in res and "Write Exclusive" in res, (g.name, res)
    # On A (Active/Optimized) the reservation is enforced for media access.
    r = a.run(f"sg_raw -s 512 {sa} 2a 00 00 00 00 00 00 00 01 00 < /dev/zero 2>&1", check=False)
    assert r.rc != 0 and "Reservation Conflict" in r.out, r.out
    assert waiting(a) == waiting(b) == 0
    assert "PR snapshot ignored" not in a.run("dmesg").out + b.run("dmesg").out


@full_only
def test_pr_survives_link_flap_and_role_switch(lun_pair):
    """B keeps the last state while unlinked and gets what changed at link
    up; after a planned switch B is primary with the same state and A
    forwards to it."""
    a, b, (sa, _), (sb, _) = lun_pair
    link(a, b)
    wait_rtpg(b, sb, LINKED)
    assert prout(b, sb, "--register --param-sark=0xb2").rc == 0
    setattr_(b, "ha_peer", "")
    wait_state(b, "offline")
    # Changed on A while B is away; B still has the old copy.
    assert prout(a, sa, "--register --param-sark=0xa2").rc == 0
    setattr_(b, "ha_peer", f"connect {INTERLINK_A}:{PORT}")
    wait_state(b, "online")
    wait_rtpg(b, sb, LINKED)
    assert keys(b, sb)[0] == ["b2", "a2"]
    # Planned switch: A secondary, then B primary.
    setattr_(a, "ha_role", "secondary")
    r = b.run(f"for i in $(seq 50); do echo primary > {NODE}/ha_role 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
              check=False)
    assert r.rc == 0, b.run("dmesg | tail").out
    wait_rtpg(a, sa, {0x2: ("standby", [0x11]), 0x3: ("active/optimized", [0x21])})
    assert keys(b, sb)[0] == ["b2", "a2"]
    # A now forwards to B.
    assert prout(a, sa, "--reserve --param-rk=0xa2 --prout-type=3").rc == 0
    res = b.run(f"sg_persist -n --in -r {sb}").out
    assert "Key=0xa2" in res and "Exclusive Access" in res, res
    r = b.run(f"sg_raw -r 512 {sb} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False)
    assert r.rc != 0 and "Reservation Conflict" in r.out, r.out
    assert waiting(a) == waiting(b) == 0



def probe(g: vm.Guest, sg: str):
    """PERSISTENT RESERVE IN (READ KEYS): allowed on a Standby port, and it
    reports a pending unit attention (TEST UNIT READY is refused there)."""
    return g.run(f"sg_raw -r 64 {sg} 5e 00 00 00 00 00 00 00 40 00 2>&1", check=False)


def test_unit_attentions_reach_the_other_node(lun_pair):
    """A PR unit attention for a registrant logged in through B, raised by
    a PR OUT through A, is reported through B; a LUN RESET through A gives
    B's nexus BUS DEVICE RESET FUNCTION OCCURRED (libiscsi's
    SCSI.MultipathIO.Reset expects a reset seen on every path)."""
    a, b, (sa, _), (sb, _) = lun_pair
    link(a, b)
    wait_rtpg(b, sb, LINKED)
    assert prout(a, sa, "--register --param-sark=0xa1").rc == 0
    assert prout(b, sb, "--register --param-sark=0xb1").rc == 0
    assert prout(b, sb, "--reserve --param-rk=0xb1 --prout-type=1").rc == 0
    assert probe(b, sb).rc == 0
    # A preempts B's reservation and registration.
    assert prout(a, sa, "--preempt --param-rk=0xa1 --param-sark=0xb1 --prout-type=1").rc == 0
    r = probe(b, sb)
    assert r.rc != 0 and "Registrations preempted" in r.out, r.out + b.run("dmesg | tail").out
    assert probe(b, sb).rc == 0  # reported once
    # A LUN RESET through A.
    r = a.run(f"sg_reset -d {sa} 2>&1", check=False)
    assert r.rc == 0, r.out
    r = probe(b, sb)
    assert r.rc != 0 and "Bus device reset function occurred" in r.out, r.out + b.run("dmesg | tail").out
    assert probe(b, sb).rc == 0
    # Without the link nothing is queued for the peer: no stale attention
    # after it comes back.
    setattr_(b, "ha_peer", "")
    wait_state(b, "offline")
    assert a.run(f"sg_reset -d {sa} 2>&1", check=False).rc == 0
    setattr_(b, "ha_peer", f"connect {INTERLINK_A}:{PORT}")
    wait_state(b, "online")
    wait_rtpg(b, sb, LINKED)
    assert "Bus device reset" not in probe(b, sb).out


@full_only
def test_auto_failover_promotes_the_secondary_and_keeps_pr(lun_pair):
    """With failover=auto, B makes itself primary when A freezes (dead
    peer), with A's PR state; A coming back primary is split brain (both
    Transitioning) until the admin demotes it."""
    a, b, (sa, _), (sb, _) = lun_pair
    setattr_(b, "failover", "auto")
    link(a, b)
    wait_rtpg(b, sb, LINKED)
    assert prout(b, sb, "--register --param-sark=0xb3").rc == 0
    a.qmp("stop")
    try:
        wait_rtpg(b, sb, {0x2: ("transitioning", []), 0x3: ("active/optimized", [0x21])})
        dmesg = b.run("dmesg").out
        assert "failover=auto: peer lost" in dmesg and "declared dead" in dmesg, dmesg
        assert b.run(f"cat {NODE}/ha_role").out == "primary\n"
        # B now executes PR OUT itself, on the state it had from A.
        assert prout(b, sb, "--reserve --param-rk=0xb3 --prout-type=1").rc == 0
        assert keys(b, sb)[0] == ["b3"]
        assert b.run(f"sg_raw -r 512 {sb} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False).rc == 0
    finally:
        a.qmp("cont")
    # A is still primary: split brain, never two optimized groups.
    both = {0x2: ("transitioning", [0x11]), 0x3: ("transitioning", [0x21])}
    wait_rtpg(b, sb, both, timeout=30)
    assert "split brain" in b.run("dmesg").out
    setattr_(a, "ha_role", "secondary")
    want = {0x2: ("standby", [0x11]), 0x3: ("active/optimized", [0x21])}
    wait_rtpg(a, sa, want)
    wait_rtpg(b, sb, want)
    # A, now secondary, gets B's PR state.
    res = a.run(f"sg_persist -n --in -r {sa}").out
    assert "Key=0xb3" in res and "Write Exclusive" in res, res


@pytest.fixture
def proxy_pair(trio):
    """lun_pair in proxy mode (ha_mode=2): B hands its IO to A."""
    yield from make_lun_pair(trio, 2)


def throttle_writes(g: vm.Guest, bps: int) -> None:
    """Limits the writes of `g`'s /dev/vdb (its own disk image) to `bps`
    bytes per second (0: no limit)."""
    g.throttle_writes(f"{g.name}-disk.raw", bps)


def stat(g: vm.Guest, name: str) -> int:
    m = re.search(rf"^{name}: (\d+)$", g.run(f"cat {NODE}/stats").out, re.M)
    assert m, name
    return int(m.group(1))


# The writes: A's disk is throttled to 16 KiB/s; a 128 KiB write primes the
# throttle (QEMU lets it through at once and holds what follows for 8 s), then
# three 16 KiB WRITE(16)s from one nexus run in the background, each writing
# its status to /tmp/w<i>. The subshells let go of the command's output: the
# guest agent answers once that is closed.
BPS = 16 * 1024
PRIME = "head -c 131072 /dev/urandom > /tmp/wdata; sg_raw -s 131072 -i /tmp/wdata {sg} " + write_cdb(4096, 131072, 512)
WRITES = "".join(f"(sg_raw -s 16384 -i /tmp/wdata -t 60 {{sg}} {write_cdb(i * 64, 16384, 512)} "
                 f"> /tmp/w{i} 2>&1; echo rc=$? >> /tmp/w{i}) </dev/null >/dev/null 2>&1 & " for i in range(3))


def in_flight(g: vm.Guest) -> int:
    """sg_raw processes still running on `g`."""
    return int(g.run("pgrep -c -x sg_raw || true").out.strip() or 0)




@pytest.mark.parametrize("through", ["a", pytest.param("b", marks=full_only)])
def test_preempt_and_abort_aborts_commands_on_both_nodes(proxy_pair, through):
    """PREEMPT AND ABORT ends the preempted nexus's commands with TASK
    ABORTED before the PR OUT completes, on whichever node they run:
    B's writes (which A executes for B in proxy mode) preempted through A,
    then A's own writes preempted through B (the PR OUT forwarded to A).
    A's backing device is throttled so that the writes are still in flight
    when the PR OUT comes."""
    preempt_and_abort(proxy_pair, through, tas=True)


@pytest.fixture
def proxy_pair_tas0(trio):
    """proxy_pair with TAS 0 on both nodes' devices (LIO takes the
    attribute only before the device is exported)."""
    yield from make_lun_pair(trio, 2, attrib={"emulate_tas": "0"})


def test_preempt_and_abort_with_tas_0_aborts_silently(proxy_pair_tas0):
    """With TAS 0 (SPC-4 control mode page) the aborted commands end
    without any status and their nexus gets COMMANDS CLEARED BY ANOTHER
    INITIATOR: B's writes (done by A for B) preempted through A. Through
    tcm_loop a command ended without status is completed to the initiator
    as it stands (tcm_loop cannot report an abort), so the check is that no
    TASK ABORTED status came, the node counted the silent ends, and the
    attention came; an iSCSI initiator would time the commands out."""
    preempt_and_abort(proxy_pair_tas0, "a", tas=False)


def preempt_and_abort(pair, through: str, tas: bool):
    a, b, (sa, _), (sb, _) = pair
    link(a, b)
    wait_rtpg(b, sb, {0x2: ("active/optimized", [0x11]), 0x3: ("active/non-optimized", [0x21])})
    assert prout(a, sa, "--register --param-sark=0xa1").rc == 0
    assert prout(b, sb, "--register --param-sark=0xb1").rc == 0
    # The victim writes; the other node preempts. The preemptor holds a
    # Write Exclusive, Registrants Only reservation: the victim may write
    # until it is preempted.
    victim, vsg, vkey, pre, psg, pkey = (b, sb, "b1", a, sa, "a1") if through == "a" else (a, sa, "a1", b, sb, "b1")
    assert prout(pre, psg, f"--reserve --param-rk=0x{pkey} --prout-type=5").rc == 0
    # Unit attentions from the link coming up are reported first.
    victim.run(f"for i in 1 2 3 4 5; do sg_turs {vsg} >/dev/null 2>&1 && break; done")
    before = stat(victim, "preempt_aborted")
    silent = stat(victim, "preempt_aborted_silently")
    throttle_writes(a, BPS)
    try:
        victim.run(PRIME.format(sg=vsg))
        victim.run(WRITES.format(sg=vsg))
        # All three in flight: B's waiting for A's answer, or A's on its disk.
        if victim is b:
            wait_in_flight(b, 3, forwarded=True)
        else:
            wait_in_flight(a, 3, "vdb")
        # The first of them starts 8 s after the prime, the last 2 s later.
        t0 = time.time()
        r = prout(pre, psg, f"--preempt-abort --param-rk=0x{pkey} --param-sark=0x{vkey} --prout-type=5")
        took = time.time() - t0
        assert r.rc == 0, r.out + pre.run("dmesg | tail").out
        # The PR OUT waited for the aborted writes: none is left running.
        left = in_flight(victim)
    finally:
        throttle_writes(a, 0)
    victim.run("for i in $(seq 100); do pgrep -x sg_raw >/dev/null || break; sleep 0.1; done")
    outs = victim.run("cat /tmp/w0 /tmp/w1 /tmp/w2").out
    silently = stat(victim, "preempt_aborted_silently") - silent
    print(f"\n[ha-pr] PREEMPT AND ABORT through {through.upper()}{'' if tas else ' with TAS 0'} took "
          f"{took:.2f}s; {victim.name}'s writes: {outs.lower().count('task aborted')} ended TASK ABORTED, "
          f"{silently} without status")
    assert left == 0, f"{left} writes still running after the PR OUT\n" + outs
    assert stat(victim, "preempt_aborted") - before == 3
    assert outs.lower().count("task aborted") == (3 if tas else 0), outs
    assert silently == (0 if tas else 3), outs
    if not tas:
        # Both attentions reach the victim's nexus, in the order the node
        # established them (the preemption's and the aborts' come from A
        # in separate messages).
        seen = []
        for _ in range(5):
            r = victim.run(f"sg_turs -v {vsg} 2>&1", check=False)
            if r.rc == 0:
                break
            seen.append(r.out)
        text = "\n".join(seen).lower()
        assert "registrations preempted" in text and "commands cleared by another initiator" in text, text
    # The preempted nexus is no longer registered; the holder's key is.
    kp, _ = keys(pre, psg)
    assert kp == [pkey], kp
    # The victim is told it was preempted: its next command gets the unit
    # attention, unless the initiator's error handler took it first (Linux
    # treats TASK ABORTED as a failure and sends TEST UNIT READY; its log
    # then names the attention by its ASC 2Ah as "Parameters changed").
    write = f"sg_raw -s 512 -i /tmp/wdata {vsg} 2a 00 00 00 00 00 00 00 01 00 2>&1"
    r = victim.run(write, check=False)
    if "Registrations preempted" in r.out:
        r = victim.run(write, check=False)
    elif tas:
        assert "Parameters changed" in victim.run("dmesg").out, r.out
    # Unregistered now, it meets the reservation on either path.
    assert r.rc != 0 and "reservation conflict" in r.out.lower(), r.out
    assert "Call Trace" not in a.run("dmesg").out + b.run("dmesg").out
