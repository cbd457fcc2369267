"""Two nodes and an initiator as an admin sets them up for failover (shared
by test_ha_failover.py and `make demo`): node A and node B export one `ha`
LUN on shared storage (/dev/vdc, the same image in both guests) over iSCSI,
one path each; the initiator runs dm-multipath with the ALUA hardware
handler and group_by_prio; fio with crc32c verification runs on the map."""
from __future__ import annotations

import json
import re
import time

import lio
import vm
from conftest import PATH_A, PATH_B
from test_ha_alua import link
from test_interlink import KEY, NODE, setattr_
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
        path_grouping_policy {grouping}
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
       "--rw=randwrite --bs=4k --size={mib}M --verify=crc32c --do_verify=1 --verify_fatal=1 "
       "--verify_backlog=512 --rate_iops=400 --output-format=json")


def path_dev(ini: vm.Guest, portal: str) -> str:
    """The SCSI disk (sdX) of the path through `portal`, once udev has made
    its by-path link (`udevadm settle` after the login may return before)."""
    link_ = f"/dev/disk/by-path/ip-{portal}:3260-iscsi-{lio.TARGET_IQN}-lun-0"
    return ini.run(f"for i in $(seq 300); do test -e {link_} && exec readlink -f {link_}; sleep 0.1; done; "
                   f"ls -l /dev/disk/by-path; exit 1").out.strip().rsplit("/", 1)[1]


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


def map_ios(ini: vm.Guest, mpath: str) -> int:
    """Reads and writes the multipath device has completed."""
    f = ini.run(f"cat /sys/block/$(basename $(readlink -f {mpath}))/stat").out.split()
    return int(f[0]) + int(f[4])


def wait_map_ios(ini: vm.Guest, mpath: str, after: int, timeout: float = 120) -> float:
    """Seconds until the map completed more than `after` + 8 IOs: with fio's
    8 IOs in flight, at least one of them was issued after the count was
    taken."""
    t0 = time.time()
    while map_ios(ini, mpath) <= after + 8:
        assert time.time() - t0 < timeout, \
            f"no IO through {mpath} for {timeout}s\n{ini.run('multipath -ll; dmesg | tail -30').out}"
        time.sleep(0.1)
    return time.time() - t0


def held(g: vm.Guest, dev: str = "/dev/vdc") -> bool:
    """Whether something in the guest (the `ha` LUN) holds `dev` open
    exclusively: an O_EXCL open of a block device then fails with EBUSY."""
    r = g.run(f"python3 -c 'import os; os.close(os.open(\"{dev}\", os.O_RDONLY | os.O_EXCL))'", check=False)
    assert r.rc == 0 or "Device or resource busy" in r.err, r
    return r.rc != 0


def start_fio(ini: vm.Guest, dev: str, mib: int = 24) -> None:
    ini.run("rm -f /tmp/fio.rc /tmp/fio.json")
    ini.run(f"echo {mib} > /tmp/fio.mib")
    ini.run(f"setsid sh -c '{FIO.format(dev=dev, mib=mib)} > /tmp/fio.json 2>/tmp/fio.err; "
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
    job = json.loads(out[out.index("{"):out.rindex("}") + 1])["jobs"][0]
    assert job["error"] == 0, out
    done = job["write"]["total_ios"], job["read"]["total_ios"]
    blocks = int(ini.run("cat /tmp/fio.mib").out) * 256
    assert done[0] >= blocks and done[1] >= blocks, done  # every block written and read back
    return job



def switch_roles(old: vm.Guest, new: vm.Guest) -> float:
    """The planned switch: `old` secondary first, then `new` primary (refused
    until `old`'s change has reached it); returns the seconds it took."""
    t0 = time.time()
    setattr_(old, "ha_role", "secondary")
    r = new.run(f"for i in $(seq 100); do echo primary > {NODE}/ha_role 2>/dev/null && exit 0; "
                "sleep 0.05; done; exit 1", check=False)
    assert r.rc == 0, f"{new.name} refused the promotion:\n{new.run('dmesg | tail').out}"
    return time.time() - t0


def link_state(g: vm.Guest) -> str:
    return g.run(f"head -n1 {NODE}/ha_link").out.strip()


def loaded(g: vm.Guest) -> bool:
    """Whether tcm_ha is loaded on `g`."""
    return g.run("test -d /sys/module/tcm_ha", check=False).rc == 0


def configure_node(g: vm.Guest, ha_id: int, role: str, mode: int) -> None:
    """Loads tcm_ha on `g` (its kernel log cleared) and sets the node
    settings of the pair (the peer address comes later, from link())."""
    g.run("dmesg -C")
    vm.load_tcm_ha(g)
    setattr_(g, "ha_id", str(ha_id))
    setattr_(g, "ha_mode", str(mode))
    setattr_(g, "ha_role", role)
    setattr_(g, "ha_key", KEY)


class Pair:
    """The configured bed: `up()` configures it, `down()` undoes it."""

    def __init__(self, a: vm.Guest, b: vm.Guest, ini: vm.Guest, mode: int = 0,
                 targetcli: bool = False, grouping: str = "group_by_prio"):
        self.a, self.b, self.ini, self.mode, self.targetcli = a, b, ini, mode, targetcli
        self.grouping = grouping
        self.tpgs: dict[str, str] = {}
        self.devs: dict[str, str] = {}
        self.mapname = ""

    @property
    def mpath(self) -> str:
        return f"/dev/mapper/{self.mapname}"

    def up(self) -> None:
        """The LUN on both nodes (A primary, B secondary, linked) and the
        initiator logged in through both, one multipath map over them.
        With `targetcli` the backstore is created with targetcli-ha."""
        a, b, ini = self.a, self.b, self.ini
        for g, ha_id, role, portal in ((a, 1, "primary", PATH_A), (b, 2, "secondary", PATH_B)):
            configure_node(g, ha_id, role, self.mode)
            tpg = lio.iscsi_target_for_ha(g, portal)
            # Relative port ids unique across the pair (LIO numbers each node's from 1).
            g.run(f"echo 0 > {tpg}/enable && echo {RTPI[g.name]} > {tpg}/rtpi && echo 1 > {tpg}/enable")
            if self.targetcli:
                g.run(f"targetcli-ha /backstores/ha create name=s0 dev=/dev/vdc lun_id={LUN_ID} wwn={SERIAL}",
                      timeout=300)
                d = g.run(f"ls -d {lio.CORE}/ha_*/s0").out.strip()
            else:
                d = lio.create_ha(g, name="s0", control=f"dev=/dev/vdc,lun_id={LUN_ID}", serial=SERIAL)
            lio.link_lun(g, tpg, d)
            self.tpgs[g.name] = tpg
        link(a, b)
        ini.run("dmesg -C")
        self._write_conf()
        ini.run("systemctl restart multipathd && systemctl start iscsid")
        for portal in (PATH_A, PATH_B):
            ini.run(f"iscsiadm -m discovery -t sendtargets -p {portal}")
        # Fail a dead path's commands to multipath within seconds, not 120 s.
        for k, v in (("node.session.timeo.replacement_timeout", 5),
                     ("node.conn[0].timeo.noop_out_interval", 2), ("node.conn[0].timeo.noop_out_timeout", 2)):
            ini.run(f"iscsiadm -m node -T {lio.TARGET_IQN} -o update -n '{k}' -v {v}")
        ini.run(f"iscsiadm -m node -T {lio.TARGET_IQN} --login && udevadm settle")
        self.devs = {"nodea": path_dev(ini, PATH_A), "nodeb": path_dev(ini, PATH_B)}
        ini.run("multipath -r >/dev/null; udevadm settle")
        self.mapname = ini.run("for i in $(seq 100); do m=$(multipath -l -v1); test -n \"$m\" && echo $m && "
                               "exit 0; sleep 0.2; done; multipath -ll; exit 1").out.strip()

    def _write_conf(self) -> None:
        conf = MPATH_CONF.replace("{grouping}", self.grouping)
        self.ini.run(f"cat > /etc/multipath.conf <<'EOF'\n{conf}EOF")

    def regroup(self, grouping: str) -> None:
        """Switches dm-multipath's path grouping policy of the map (e.g.
        `multibus`: one group with both paths) and waits until the map
        shows it."""
        self.grouping = grouping
        self._write_conf()
        groups = 1 if grouping == "multibus" else 2
        self.ini.run(f"multipathd reconfigure; for i in $(seq 150); do "
                     f"test $(multipath -ll | grep -c 'policy=') -eq {groups} && exit 0; sleep 0.2; done; "
                     "multipath -ll; exit 1", timeout=90)

    def down(self, accel: str) -> None:
        """Undoes up(); a guest that was powered off is booted afresh."""
        ini = self.ini
        if self.mapname:
            ini.run(f"pkill fio; dmsetup message {self.mapname} 0 fail_if_no_path; sleep 1; multipath -F; "
                    "multipath -ll", check=False, timeout=60)
        lio.logout_all(ini)
        ini.run("systemctl stop multipathd; rm -f /etc/multipath.conf", check=False)
        for g in (self.a, self.b):
            if not g.alive():
                g.restart(accel)
                continue
            if not loaded(g):
                # A test unloaded it (nothing of it is left to undo).
                lio.clear_target(g)
                continue
            setattr_(g, "ha_peer", "")
            if g.name in self.tpgs:
                lio.unlink_luns(g, self.tpgs[g.name])
            lio.clear_ha(g)
            lio.clear_target(g)
            g.run("rmmod tcm_ha", timeout=60)


def write_cdb(lba: int, nbytes: int, bs: int) -> str:
    """An sg_raw WRITE(16) CDB for `nbytes` at `lba` (block size `bs`)."""
    return f"8a 00 {' '.join(f'{b:02x}' for b in lba.to_bytes(8, 'big'))} " \
           f"{' '.join(f'{b:02x}' for b in (nbytes // bs).to_bytes(4, 'big'))} 00 00"


def writes_in_flight(g: vm.Guest, dev: str) -> int:
    """Writes `g`'s block device `dev` (e.g. vdc) has in flight."""
    return int(g.run(f"cat /sys/block/{dev}/inflight").out.split()[1])


def wait_in_flight(g: vm.Guest, n: int, dev: str = "", forwarded: bool = False, timeout: float = 20) -> None:
    """Waits until `g` has at least `n` writes in flight on its block
    device `dev`, or (`forwarded`) `n` commands waiting for the peer."""
    deadline = time.time() + timeout
    while True:
        if forwarded:
            out = g.run("cat /sys/kernel/config/tcm_ha/stats").out
            have = int(re.search(r"^forwarded_waiting: (\d+)$", out, re.M).group(1))
        else:
            have = writes_in_flight(g, dev)
        if have >= n:
            return
        assert time.time() < deadline, f"{g.name}: {have} of {n} in flight"
        time.sleep(0.1)


def task(ini, portal: str, attr: str, what: str, lba: int, arg) -> str:
    """One READ(10) or WRITE(10) with task attribute `attr` through
    `portal`, from a session of its own (tests/tools/iscsi_task.py: the
    Linux initiator tags every command SIMPLE); the tool's line."""
    r = ini.run(f"python3 /mnt/repo/tests/tools/iscsi_task.py {portal} {lio.TARGET_IQN} "
                f"iqn.2026-12.org.tcm-ha:task {attr} {what} {lba} {arg}", check=False, timeout=120)
    assert r.rc == 0, r.out
    return r.out.strip()
