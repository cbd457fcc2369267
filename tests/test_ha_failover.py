"""Failover under IO through dm-multipath (issue 5, requirement 6): node A
and node B export one LUN on shared storage (/dev/vdc, the same image in
both guests) over iSCSI, one path each; the initiator runs dm-multipath
with the ALUA hardware handler and group_by_prio, as an admin would. fio
with crc32c verification runs through a planned role switch and through a
hard power-off of the primary followed by the promotion of the survivor (what
an external cluster manager does), and must see no IO or verify error."""
import re
import time

import pytest

import lio
from conftest import full_only
from hapair import (Pair, fio_running, finish_fio, held, setattr_, start_fio, switch_roles, wait_paths,
                    wait_writes, writes)

@pytest.fixture
def mp(trio, accel):
    """The LUN on both nodes (A primary, B secondary, linked, mode 0) and
    the initiator logged in through both, one multipath map over them."""
    p = Pair(trio.guests["nodea"], trio.guests["nodeb"], trio.guests["initiator"])
    try:
        p.up()
        yield p.a, p.b, p.ini, p.devs, p.mpath
    finally:
        p.down(accel)


def test_multipath_follows_a_planned_role_switch_under_io(mp):
    a, b, ini, devs, mpath = mp
    da, db = devs["nodea"], devs["nodeb"]
    # The optimized group is node A's: its path active, B's a ghost (Standby).
    wait_paths(ini, {da: ("ready", 50), db: ("ghost", 1)})
    # Only the primary holds the backing device (mode 0).
    assert held(a) and not held(b)
    assert "backing device released (secondary)" in b.run(f"cat {lio.CORE}/ha_0/s0/info").out
    assert re.search(r"hwhandler='1 alua'", ini.run("multipath -ll").out)
    start_fio(ini, mpath, 8)
    wait_writes(ini, da, 0)
    w_b = writes(ini, db)
    assert fio_running(ini)
    # The switch: A secondary first, then B primary (refused until A's
    # change has reached it).
    t0 = time.time()
    promoted = switch_roles(a, b)
    # Writes through B once the initiator follows. A fio run (8 MiB) may
    # end first on a loaded host (it once did, and B saw no write for 60
    # s): each run must end without error, and another is started.
    ios = [0, 0]
    while writes(ini, db) <= w_b:
        if not fio_running(ini):
            job = finish_fio(ini)
            ios = [ios[0] + job["write"]["total_ios"], ios[1] + job["read"]["total_ios"]]
            start_fio(ini, mpath, 8)
        assert time.time() - t0 < 120, \
            f"no write through {db} for 120s\n{ini.run('multipath -ll; dmesg | tail -30').out}"
        time.sleep(0.2)
    resumed = time.time() - t0
    wait_paths(ini, {da: ("ghost", 1), db: ("ready", 50)})
    job = finish_fio(ini)
    ios = [ios[0] + job["write"]["total_ios"], ios[1] + job["read"]["total_ios"]]
    # The device moved with the role.
    assert held(b) and not held(a)
    assert "s0: secondary: backing device /dev/vdc released" in a.run("dmesg").out
    assert "s0: primary: backing device /dev/vdc opened" in b.run("dmesg").out
    print(f"\n[failover] planned switch: B primary after {promoted:.2f}s, writes through B after "
          f"{resumed:.2f}s; fio {ios[0]} writes, {ios[1]} verified reads, "
          f"0 errors")
    assert "Asymmetric access state changed" in ini.run("dmesg").out


@full_only
def test_power_off_of_the_primary_then_promotion_under_io(mp):
    a, b, ini, devs, mpath = mp
    da, db = devs["nodea"], devs["nodeb"]
    wait_paths(ini, {da: ("ready", 50), db: ("ghost", 1)})
    start_fio(ini, mpath, 8)
    wait_writes(ini, da, 0)
    w_b = writes(ini, db)
    t0 = time.time()
    a.proc.kill()  # power off: no FIN, no goodbye on the interlink
    # The cluster manager's part: wait until B has declared the peer dead,
    # then promote it.
    r = b.run("for i in $(seq 200); do test \"$(head -n1 /sys/kernel/config/tcm_ha/ha_link)\" != online "
              "&& exit 0; sleep 0.05; done; exit 1", check=False)
    assert r.rc == 0, b.run("cat /sys/kernel/config/tcm_ha/ha_link; dmesg | tail").out
    detected = time.time() - t0
    setattr_(b, "ha_role", "primary")
    assert fio_running(ini), "fio ended before the failover: nothing was tested"
    wait_writes(ini, db, w_b)
    resumed = time.time() - t0
    job = finish_fio(ini)
    assert "peer" in b.run("dmesg").out
    print(f"\n[failover] power-off of A: B saw it after {detected:.2f}s, writes through B after "
          f"{resumed:.2f}s; fio {job['write']['total_ios']} writes, {job['read']['total_ios']} verified reads, "
          f"0 errors")
