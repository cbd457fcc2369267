"""Persistent reservations across the pair (issue 5, requirement 4): the
primary owns the PR state and sends a snapshot to the secondary whenever it
changes (and at link up); a PR OUT received by the secondary is executed by
the primary. Each node exports the LUN through its own tcm_loop port, so
node A's initiator (naa.5001405000000aa1, relative port 0x11) and node B's
(naa.5001405000000bb1, relative port 0x21) are two I_T nexuses of one
LUN."""
import re

import vm
from conftest import INTERLINK_A
from test_ha_alua import link, lun_pair, wait_rtpg  # noqa: F401 (fixture)
from test_interlink import PORT, setattr_, wait_state

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

