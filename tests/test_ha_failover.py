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
import vm
from conftest import PATH_A, PATH_B
from test_ha_alua import link
from test_interlink import KEY, setattr_

SERIAL = "5e7a13c0-8b44-4f0e-9a61-0c2d3e4f5a6b"
LUN_ID = 9
RTPI = {"nodea": 0x11, "nodeb": 0x21}
# The test kernel has dm-round-robin, not the default service-time selector.
MPATH_CONF = """defaults {
    user_friendly_names yes
    find_multipaths no
    polling_interval 1
}
blacklist {
    devnode "^vd[a-z]"
}
devices {
    device {
        vendor "LIO-ORG"
        product ".*"
        hardware_handler "1 alua"
        prio alua
        path_grouping_policy group_by_prio
        path_selector "round-robin 0"
        path_checker tur
        failback immediate
        no_path_retry queue
    }
}
"""
# Writes then verifies 24 MiB in 4k blocks, inline (every 512 writes), at a
# bounded rate so that the run spans the events the tests cause (~30 s).
FIO = ("fio --name=ha --filename={dev} --direct=1 --ioengine=libaio --iodepth=8 "
       "--rw=randwrite --bs=4k --size=24M --verify=crc32c --do_verify=1 --verify_fatal=1 "
       "--verify_backlog=512 --rate_iops=400 --output-format=json")


def path_dev(ini: vm.Guest, portal: str) -> str:
    link_ = f"/dev/disk/by-path/ip-{portal}:3260-iscsi-{lio.TARGET_IQN}-lun-0"
    return ini.run(f"readlink -f {link_}").out.strip().rsplit("/", 1)[1]


def paths(ini: vm.Guest) -> dict[str, tuple[str, int]]:
    """multipathd's view: {sdX: (checker state, priority)}."""
    out = ini.run("multipathd show paths raw format '%d %T %p'").out
    return {d: (t, int(p)) for d, t, p in re.findall(r"^(sd\w+) (\S+) (-?\d+)\s*$", out, re.M)}


def wait_paths(ini: vm.Guest, want: dict[str, tuple[str, int]], timeout: float = 60) -> float:
    t0 = time.time()
    while True:
        got = paths(ini)
        if got == want:
            return time.time() - t0
        if time.time() - t0 > timeout:
            raise AssertionError(f"paths {got} != {want}\n{ini.run('multipath -ll').out}\n"
                                 f"{ini.run('dmesg | tail -30').out}")
        time.sleep(0.5)


def writes(ini: vm.Guest, dev: str) -> int:
    return int(ini.run(f"cat /sys/block/{dev}/stat").out.split()[4])


def wait_writes(ini: vm.Guest, dev: str, after: int, timeout: float = 60) -> float:
    """Seconds until `dev` completed more writes than `after`."""
    t0 = time.time()
    while writes(ini, dev) <= after:
        assert time.time() - t0 < timeout, \
            f"no write through {dev} for {timeout}s\n{ini.run('multipath -ll; dmesg | tail -30').out}"
        time.sleep(0.1)
    return time.time() - t0


def held(g: vm.Guest, dev: str = "/dev/vdc") -> bool:
    """Whether something in the guest (the `ha` LUN) holds `dev` open
    exclusively: an O_EXCL open of a block device then fails with EBUSY."""
    r = g.run(f"python3 -c 'import os; os.close(os.open(\"{dev}\", os.O_RDONLY | os.O_EXCL))'", check=False)
    assert r.rc == 0 or "Device or resource busy" in r.err, r
    return r.rc != 0


def start_fio(ini: vm.Guest, dev: str) -> None:
    ini.run("rm -f /tmp/fio.rc /tmp/fio.json")
    ini.run(f"setsid sh -c '{FIO.format(dev=dev)} > /tmp/fio.json 2>/tmp/fio.err; "
            f"echo $? > /tmp/fio.rc' < /dev/null > /dev/null 2>&1 &")


def fio_running(ini: vm.Guest) -> bool:
    return ini.run("test -e /tmp/fio.rc", check=False).rc != 0


def finish_fio(ini: vm.Guest, timeout: float = 300) -> dict:
    """Waits for fio; asserts it ended without IO or verify error."""
    r = ini.run(f"for i in $(seq {timeout * 5}); do test -e /tmp/fio.rc && exit 0; sleep 0.2; done; exit 1",
                timeout=timeout + 30, check=False)
    assert r.rc == 0, f"fio still running after {timeout}s\n{ini.run('multipath -ll; dmesg | tail -30').out}"
    rc = ini.run("cat /tmp/fio.rc").out.strip()
    out = ini.run("cat /tmp/fio.json /tmp/fio.err").out
    assert rc == "0", out
    job = __import__("json").loads(out[out.index("{"):out.rindex("}") + 1])["jobs"][0]
    assert job["error"] == 0, out
    done = job["write"]["total_ios"], job["read"]["total_ios"]
    assert done[0] >= 6144 and done[1] >= 6144, done  # every block written and read back
    return job


@pytest.fixture
def mp(trio, accel):
    """The LUN on both nodes (A primary, B secondary, linked, mode 0) and
    the initiator logged in through both, one multipath map over them."""
    a, b, ini = trio.guests["nodea"], trio.guests["nodeb"], trio.guests["initiator"]
    tpgs = {}
    for g, ha_id, role, portal in ((a, 1, "primary", PATH_A), (b, 2, "secondary", PATH_B)):
        g.run("dmesg -C")
        vm.load_tcm_ha(g)
        setattr_(g, "ha_id", str(ha_id))
        setattr_(g, "ha_mode", "0")
        setattr_(g, "ha_role", role)
        setattr_(g, "ha_key", KEY)
        tpg = lio.iscsi_target_for_ha(g, portal)
        # Relative port ids unique across the pair (LIO numbers each node's from 1).
        g.run(f"echo 0 > {tpg}/enable && echo {RTPI[g.name]} > {tpg}/rtpi && echo 1 > {tpg}/enable")
        d = lio.create_ha(g, name="s0", control=f"dev=/dev/vdc,lun_id={LUN_ID}", serial=SERIAL)
        lio.link_lun(g, tpg, d)
        tpgs[g.name] = tpg
    link(a, b)
    ini.run("dmesg -C")
    ini.run(f"cat > /etc/multipath.conf <<'EOF'\n{MPATH_CONF}EOF")
    ini.run("systemctl restart multipathd && systemctl start iscsid")
    for portal in (PATH_A, PATH_B):
        ini.run(f"iscsiadm -m discovery -t sendtargets -p {portal}")
    # Fail a dead path's commands to multipath within seconds, not 120 s.
    for k, v in (("node.session.timeo.replacement_timeout", 5),
                 ("node.conn[0].timeo.noop_out_interval", 2), ("node.conn[0].timeo.noop_out_timeout", 2)):
        ini.run(f"iscsiadm -m node -T {lio.TARGET_IQN} -o update -n '{k}' -v {v}")
    ini.run(f"iscsiadm -m node -T {lio.TARGET_IQN} --login && udevadm settle")
    devs = {"nodea": path_dev(ini, PATH_A), "nodeb": path_dev(ini, PATH_B)}
    ini.run("multipath -r >/dev/null; udevadm settle")
    mapname = ini.run("for i in $(seq 100); do m=$(multipath -l -v1); test -n \"$m\" && echo $m && exit 0; "
                      "sleep 0.2; done; multipath -ll; exit 1").out.strip()
    try:
        yield a, b, ini, devs, f"/dev/mapper/{mapname}"
    finally:
        ini.run(f"pkill fio; dmsetup message {mapname} 0 fail_if_no_path; sleep 1; multipath -F; "
                "multipath -ll", check=False, timeout=60)
        lio.logout_all(ini)
        ini.run("systemctl stop multipathd; rm -f /etc/multipath.conf", check=False)
        for g in (a, b):
            if not g.alive():
                g.restart(accel)
                continue
            setattr_(g, "ha_peer", "")
            lio.unlink_luns(g, tpgs[g.name])
            lio.clear_ha(g)
            lio.clear_target(g)
            g.run("rmmod tcm_ha", timeout=60)


def test_multipath_follows_a_planned_role_switch_under_io(mp):
    a, b, ini, devs, mpath = mp
    da, db = devs["nodea"], devs["nodeb"]
    # The optimized group is node A's: its path active, B's a ghost (Standby).
    wait_paths(ini, {da: ("ready", 50), db: ("ghost", 1)})
    # Only the primary holds the backing device (mode 0).
    assert held(a) and not held(b)
    assert "backing device released (secondary)" in b.run(f"cat {lio.CORE}/ha_0/s0/info").out
    assert re.search(r"hwhandler='1 alua'", ini.run("multipath -ll").out)
    start_fio(ini, mpath)
    wait_writes(ini, da, 0)
    w_b = writes(ini, db)
    assert fio_running(ini)
    # The switch: A secondary first, then B primary (refused until A's
    # change has reached it).
    t0 = time.time()
    setattr_(a, "ha_role", "secondary")
    r = b.run("for i in $(seq 100); do echo primary > /sys/kernel/config/tcm_ha/ha_role 2>/dev/null && exit 0; "
              "sleep 0.05; done; exit 1", check=False)
    assert r.rc == 0, b.run("dmesg | tail").out
    promoted = time.time() - t0
    assert fio_running(ini), "fio ended before the switch: nothing was tested"
    wait_writes(ini, db, w_b)
    resumed = time.time() - t0
    wait_paths(ini, {da: ("ghost", 1), db: ("ready", 50)})
    job = finish_fio(ini)
    # The device moved with the role.
    assert held(b) and not held(a)
    assert "s0: secondary: backing device /dev/vdc released" in a.run("dmesg").out
    assert "s0: primary: backing device /dev/vdc opened" in b.run("dmesg").out
    print(f"\n[failover] planned switch: B primary after {promoted:.2f}s, writes through B after "
          f"{resumed:.2f}s; fio {job['write']['total_ios']} writes, {job['read']['total_ios']} verified reads, "
          f"0 errors")
    assert "Asymmetric access state changed" in ini.run("dmesg").out


def test_power_off_of_the_primary_then_promotion_under_io(mp):
    a, b, ini, devs, mpath = mp
    da, db = devs["nodea"], devs["nodeb"]
    wait_paths(ini, {da: ("ready", 50), db: ("ghost", 1)})
    start_fio(ini, mpath)
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


# libiscsi across the pair: the PR families with both sessions entering
# through the secondary (every PR OUT forwarded to the primary), and the
# MultipathIO family with one URL per node.
PR_FAMILIES = ["ProutRegister", "ProutReserve", "ProutClear", "ProutPreempt",
               "PrinReadKeys", "PrinServiceactionRange", "PrinReportCapabilities"]
# Expected failures with the reason (in step with the issue note).
KNOWN: dict[str, str] = {}


@pytest.mark.skip(reason="iscsi-test-cu opens each URL with TEST UNIT READY and READ CAPACITY and "
                         "gives up on a Standby path (NOT READY 04h/0Bh, seen in make check): it can run "
                         "through node B once mode 2 (issue 6) makes B's path active")
def test_libiscsi_across_the_pair(mp):
    from test_libiscsi import run_suite
    a, b, ini, _, _ = mp
    url = {g: f"iscsi://{p}/{lio.TARGET_IQN}/0" for g, p in (("a", PATH_A), ("b", PATH_B))}
    results = {}
    for name, tests, urls in (("PR through B", ",".join(f"SCSI.{f}" for f in PR_FAMILIES),
                               f"{url['b']} {url['b']}"),
                              ("MultipathIO A+B", "SCSI.MultipathIO", f"{url['a']} {url['b']}")):
        counts, failed, out = results[name] = run_suite(ini, tests, urls)
        print(f"\n[libiscsi] {name}: {counts}")
        for f in failed:
            print(f"[libiscsi] FAILED {f}: {KNOWN.get(f, 'unexpected')}")
    for name, (counts, failed, out) in results.items():
        assert counts["ran"] >= 1, out[-3000:]
        unexpected = [f for f in failed if f not in KNOWN]
        assert not unexpected, (name, unexpected, out[-6000:])
