"""ALUA across the pair (issue 5, first part): each node announces its LUNs
(lun_id, role, geometry, serial, target ports) over the interlink; REPORT
TARGET PORT GROUPS on either node lists both nodes' groups and ports in the
states of CTL's table; a state change raises ASYMMETRIC ACCESS STATE CHANGED;
a LUN whose copies differ, and two primaries, are reported and never give
two Active/Optimized groups."""
import re
import time

import pytest

import lio
import vm
from conftest import INTERLINK_A
from test_interlink import KEY, PORT, setattr_, wait_state
from test_scsi import ua_count
from conftest import full_only

SERIAL = "9b1f0c2e-55aa-4c1e-8d33-77e0a1b2c3d4"
LUN_ID = 7


STATES = {0x0: "active/optimized", 0x1: "active/non-optimized", 0x2: "standby",
          0x3: "unavailable", 0xF: "transitioning"}


def rtpg(g: vm.Guest, sg: str) -> dict[int, tuple[str, list[int]]]:
    """REPORT TARGET PORT GROUPS decoded from the raw parameter data:
    {group id: (state, [relative target port ids])}."""
    hexdump = g.run(f"sg_rtpg -r {sg} | od -An -tx1 -v").out
    data = bytes(int(x, 16) for x in hexdump.split())
    end = 4 + int.from_bytes(data[0:4], "big")
    groups, pos = {}, 4
    while pos + 8 <= min(end, len(data)):
        state = STATES.get(data[pos] & 0x0F, hex(data[pos] & 0x0F))
        gid = int.from_bytes(data[pos + 2:pos + 4], "big")
        count = data[pos + 7]
        ports = [int.from_bytes(data[pos + 8 + 4 * i + 2:pos + 8 + 4 * i + 4], "big") for i in range(count)]
        groups[gid] = (state, ports)
        pos += 8 + 4 * count
    return groups


def wait_rtpg(g: vm.Guest, sg: str, want: dict, timeout: float = 15) -> dict:
    deadline = time.time() + timeout
    while True:
        got = rtpg(g, sg)
        if got == want or time.time() > deadline:
            assert got == want, f"{g.name}: {got} != {want}\n{g.run('dmesg | tail -15').out}"
            return got
        time.sleep(0.3)


@pytest.fixture
def lun_pair(trio):
    """The same LUN (lun_id 7) on both nodes, exported locally through
    tcm_loop (A's port 0x11, B's 0x21); A primary, B secondary, mode 0."""
    yield from make_lun_pair(trio, 0)


def make_lun_pair(trio, mode: int, attrib: dict[str, str] | None = None):
    """lun_pair's body, for `ha_mode` `mode`; `attrib`: device attributes
    (attrib/<name>) set on both nodes before the LUN is exported."""
    a, b = trio.guests["nodea"], trio.guests["nodeb"]
    sgs = {}
    for g, ha_id, role, rtpi, wwn in ((a, 1, "primary", 0x11, "5001405000000aa0"),
                                      (b, 2, "secondary", 0x21, "5001405000000bb0")):
        g.run("dmesg -C")
        vm.load_tcm_ha(g)
        setattr_(g, "ha_id", str(ha_id))
        setattr_(g, "ha_mode", str(mode))
        setattr_(g, "ha_role", role)
        setattr_(g, "ha_key", KEY)
        d = lio.create_ha(g, control=f"dev=/dev/vdb,lun_id={LUN_ID}", serial=SERIAL)
        for name, value in (attrib or {}).items():
            g.run(f"echo {value} > {d}/attrib/{name}")
        sgs[g.name] = (lio.loopback_lun(g, d, wwn, wwn[:-1] + "1", rtpi=rtpi, sg=True), d)
    try:
        yield a, b, sgs["nodea"], sgs["nodeb"]
    finally:
        for g in (a, b):
            setattr_(g, "ha_peer", "")
            lio.clear_loopback(g)
            lio.clear_ha(g)
            g.run("rmmod tcm_loop; rmmod tcm_ha", timeout=60)


def wait_info(g: vm.Guest, d: str, text: str, timeout: float = 10) -> None:
    """Waits until the `info` of configfs device `d` contains `text`."""
    r = g.run(f"for i in $(seq {int(timeout * 10)}); do grep -qF {vm.q(text.rstrip())} {d}/info && exit 0; "
              "sleep 0.1; done; exit 1", check=False, timeout=timeout + 30)
    info = g.run(f"cat {d}/info").out
    assert r.rc == 0 and text in info, f"{g.name}: {text!r} not in {d}/info:\n{info}"


def link(a, b):
    setattr_(a, "ha_peer", f"listen {INTERLINK_A}:{PORT}")
    setattr_(b, "ha_peer", f"connect {INTERLINK_A}:{PORT}")
    wait_state(a, "online")
    wait_state(b, "online")


def test_both_nodes_report_both_groups(lun_pair):
    a, b, (sa, _), (sb, _) = lun_pair
    # Before the link: A primary alone, B secondary without a primary.
    wait_rtpg(a, sa, {0x2: ("active/optimized", [0x11]), 0x3: ("unavailable", [])})
    wait_rtpg(b, sb, {0x2: ("active/optimized", []), 0x3: ("unavailable", [0x21])})
    uas = ua_count(a, sa), ua_count(b, sb)
    link(a, b)
    t0 = time.time()
    want = {0x2: ("active/optimized", [0x11]), 0x3: ("standby", [0x21])}
    wait_rtpg(a, sa, want)
    wait_rtpg(b, sb, want)
    print(f"\n[ha-alua] both nodes agree {time.time() - t0:.2f}s after link up")
    # Both nexuses heard of the change (B's own state, A's peer group; a
    # Transitioning step on the way may add one).
    assert ua_count(a, sa) > uas[0] and ua_count(b, sb) > uas[1], uas
    # The secondary refuses media access as Standby.
    r = b.run(f"sg_raw -r 512 {sb} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False)
    assert r.rc != 0 and "standby state" in r.out, r.out
    assert "ALUA states now local standby, peer active/optimized" in b.run("dmesg").out
    # The link goes away: B falls back to Unavailable, A sees the peer
    # Transitioning (its ha_peer is still set).
    setattr_(b, "ha_peer", "")
    wait_rtpg(b, sb, {0x2: ("active/optimized", []), 0x3: ("unavailable", [0x21])})
    wait_rtpg(a, sa, {0x2: ("active/optimized", [0x11]), 0x3: ("transitioning", [])})


def test_mismatched_copy_is_not_used(lun_pair):
    a, b, (sa, da), (_, db) = lun_pair
    # LIO changes a unit serial only while the device is not exported.
    lio.clear_loopback(b)
    b.run(f"echo other-serial-0000 > {db}/wwn/vpd_unit_serial")
    sb = lio.loopback_lun(b, db, "5001405000000bb0", "5001405000000bb1", rtpi=0x21, sg=True)
    link(a, b)
    r = b.run("for i in $(seq 100); do dmesg | grep -q \"peer's copy differs\" && exit 0; sleep 0.1; done; exit 1",
              check=False)
    assert r.rc == 0, b.run("dmesg").out
    # B does not follow a primary whose LUN is another one: Transitioning.
    got = wait_rtpg(b, sb, {0x2: ("transitioning", []), 0x3: ("transitioning", [0x21])})
    assert "active/optimized" not in str(got)
    # Both nodes show it in the device's info (configfs).
    for g, d in ((a, da), (b, db)):
        wait_info(g, d, "the peer's copy differs (size, block size or serial): not used")


@full_only
def test_lun_of_another_size_is_not_used(lun_pair):
    """B's copy of the LUN on a device half the size of A's (a loop device
    over the first 128 MiB of B's /dev/vdb, same serial): both nodes report
    it in dmesg and info, B is not Active; once B's LUN is gone, A's info
    says the peer has none."""
    a, b, (sa, da), (_, db) = lun_pair
    lio.clear_loopback(b)
    lio.clear_ha(b)
    loop = b.run("losetup --sizelimit 134217728 -f --show /dev/vdb").out.strip()
    try:
        db = lio.create_ha(b, control=f"dev={loop},lun_id={LUN_ID}", serial=SERIAL)
        sb = lio.loopback_lun(b, db, "5001405000000bb0", "5001405000000bb1", rtpi=0x21, sg=True)
        link(a, b)
        for g in (a, b):
            r = g.run("for i in $(seq 100); do dmesg | grep -q \"peer's copy differs\" && exit 0; sleep 0.1; done; "
                      "exit 1", check=False)
            assert r.rc == 0, g.run("dmesg").out
        log = b.run("dmesg").out
        assert f"LUN {LUN_ID}: peer's copy differs (block size 512 vs 512, 262144 vs 524288 blocks, serial same)" \
            in log, log
        got = wait_rtpg(b, sb, {0x2: ("transitioning", []), 0x3: ("transitioning", [0x21])})
        assert "active/optimized" not in str(got)
        for g, d in ((a, da), (b, db)):
            wait_info(g, d, "the peer's copy differs (size, block size or serial): not used")
        # B's LUN goes away while linked: A notes that the peer has none,
        # and serves as the only primary.
        lio.clear_loopback(b)
        lio.clear_ha(b)
        wait_info(a, da, "; the peer has no LUN with this lun_id")
        assert "ALUA: local active/optimized, peer " in a.run(f"cat {da}/info").out
    finally:
        lio.clear_loopback(b)
        lio.clear_ha(b)
        b.run(f"losetup -d {loop}", check=False)


def test_two_primaries_never_both_optimized(lun_pair):
    a, b, (sa, da), (sb, db) = lun_pair
    setattr_(b, "ha_role", "primary")
    link(a, b)
    want = {0x2: ("transitioning", [0x11]), 0x3: ("transitioning", [0x21])}
    wait_rtpg(a, sa, want)
    wait_rtpg(b, sb, want)
    assert "split brain" in a.run("dmesg").out
    for g, d in ((a, da), (b, db)):
        wait_info(g, d, "ALUA: local transitioning, peer transitioning; split brain: both nodes primary")
    # Resolving it (B back to secondary) restores the normal states.
    setattr_(b, "ha_role", "secondary")
    want = {0x2: ("active/optimized", [0x11]), 0x3: ("standby", [0x21])}
    wait_rtpg(a, sa, want)
    wait_rtpg(b, sb, want)
    wait_info(a, da, "ALUA: local active/optimized, peer standby\n")
    wait_info(b, db, "ALUA: local standby, peer active/optimized\n")


def test_second_primary_is_refused_while_linked(lun_pair):
    """With the link up, promoting B while A is primary fails with EBUSY
    (node-wide and per LUN) and changes nothing; the planned switch (A
    secondary first, then B primary) works and moves the optimized group."""
    a, b, (sa, _), (sb, db) = lun_pair
    link(a, b)
    want = {0x2: ("active/optimized", [0x11]), 0x3: ("standby", [0x21])}
    wait_rtpg(b, sb, want)
    r = b.run(f"echo primary > /sys/kernel/config/tcm_ha/ha_role", check=False)
    assert r.rc != 0 and "Device or resource busy" in r.err, r
    assert f"ha_role: primary refused: LUN {LUN_ID} is primary on the linked peer" in b.run("dmesg").out
    r = b.run(f"echo -n ha_role=primary > {db}/control", check=False)
    assert r.rc != 0 and "Device or resource busy" in r.err, r
    assert f"ha_role=primary refused: LUN {LUN_ID} is primary on the linked peer" in b.run("dmesg").out
    assert b.run("cat /sys/kernel/config/tcm_ha/ha_role").out == "secondary\n"
    wait_rtpg(a, sa, want, timeout=2)
    wait_rtpg(b, sb, want, timeout=2)
    # The planned switch: demote A, then B may take over once it has heard.
    setattr_(a, "ha_role", "secondary")
    r = b.run("for i in $(seq 50); do echo primary > /sys/kernel/config/tcm_ha/ha_role 2>/dev/null && exit 0; "
              "sleep 0.1; done; exit 1", check=False)
    assert r.rc == 0, b.run("dmesg | tail").out
    want = {0x2: ("standby", [0x11]), 0x3: ("active/optimized", [0x21])}
    wait_rtpg(a, sa, want)
    wait_rtpg(b, sb, want)
    assert b.run(f"sg_raw -r 512 {sb} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False).rc == 0
