"""Boot-time configuration: both nodes save their LIO configuration with the
node's HA settings (targetcli-ha saveconfig), enable tcm-ha.service
(tools/systemd) and reboot. At boot the unit loads tcm_ha and restores
everything (targetctl-ha restore): the interlink comes back, the LUN has
its role and its ports their relative ids, the initiator sees the ALUA
states through both paths, and its iSCSI sessions recover and read what was
written before the reboot.

The guests keep their root file system across the reboot
(Guest.restart(keep_root=True)). Their addresses are configured by the
harness only after boot, so the iSCSI portals are 0.0.0.0:3260 (a portal on
an address that does not exist yet cannot be restored) and the interlink
comes up once the addresses are there (the link thread retries)."""
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import lio
import vm
from conftest import INTERLINK_A, PATH_A, PATH_B
from test_ha_alua import rtpg
from test_interlink import KEY, NODE, PORT, setattr_, wait_state

# Two reboots under TCG take about 5 min: in `make check-full` only.
pytestmark = pytest.mark.skipif(not vm.FULL, reason="reboots both nodes (~5 min): make check-full")

IQN = "iqn.2026-11.org.tcm-ha:boot"
SERIAL = "5001405b0070c0f9"
LUN_ID = 9
ETC = "/etc/rtslib-fb-target"
SAVE = f"{ETC}/saveconfig.json"
KEY_FILE = f"{ETC}/tcm_ha.key"
UNIT = "tcm-ha.service"
CFS_TPG = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1"
# node: (ha_id, ha_role, ha_peer, rtpi of its iSCSI TPG)
NODES = {"nodea": (1, "primary", f"listen {INTERLINK_A}:{PORT}", 0x11),
         "nodeb": (2, "secondary", f"connect {INTERLINK_A}:{PORT}", 0x21)}
# REPORT TARGET PORT GROUPS through either path: node 1's group 2, node 2's 3.
WANT_RTPG = {0x2: ("active/optimized", [0x11]), 0x3: ("standby", [0x21])}


def both(fn, guests):
    """Runs fn(guest) for each guest in parallel; returns the results."""
    with ThreadPoolExecutor(len(guests)) as pool:
        return list(pool.map(fn, guests))


def configure_node(g: vm.Guest) -> None:
    """tcm_ha installed in the guest's module tree (modprobe finds it, as the
    unit needs), the key file, the node settings, and the `ha` LUN exported
    through iSCSI with targetcli-ha."""
    ha_id, role, peer, rtpi = NODES[g.name]
    g.run("dmesg -C")
    g.run("d=/lib/modules/$(uname -r)/updates && mkdir -p $d && cp /mnt/repo/tcm_ha.ko $d/ && "
          "depmod -a && modprobe tcm_ha", timeout=300)
    g.run(f"mkdir -p {ETC} && (umask 077; printf %s {vm.q(KEY)} > {KEY_FILE})")
    setattr_(g, "ha_id", str(ha_id))
    setattr_(g, "ha_role", role)
    g.run(f"cat {KEY_FILE} > {NODE}/ha_key")
    setattr_(g, "ha_peer", peer)
    tpg = f"/iscsi/{IQN}/tpg1"
    for c in (f"/backstores/ha create name=disk0 dev=/dev/vdb lun_id={LUN_ID} wwn={SERIAL}",
              f"/iscsi create {IQN}",
              f"{tpg}/luns create /backstores/ha/disk0",
              f"{tpg} set attribute authentication=0 demo_mode_write_protect=0 "
              f"generate_node_acls=1 cache_dynamic_acls=1"):
        g.run(f"targetcli-ha {c}", timeout=300)
    # Distinct relative port ids on the two nodes (only while disabled).
    g.run(f"echo 0 > {CFS_TPG}/enable && echo {rtpi} > {CFS_TPG}/rtpi && echo 1 > {CFS_TPG}/enable")


def session_dir(i: vm.Guest, portal: str) -> str:
    """The sysfs directory of the initiator's iSCSI session to `portal`."""
    return i.run(
        f"for s in /sys/class/iscsi_session/session*; do "
        f"  cat $s/device/connection*/iscsi_connection/connection*/persistent_address "
        f"      $s/device/connection*/iscsi_connection/connection*/address 2>/dev/null "
        f"    | grep -qx {portal} && echo $s && exit 0; "
        f"done; iscsiadm -m session; exit 1").out.strip()


def lun_node(i: vm.Guest, session: str, kind: str) -> str:
    """/dev node of LUN 0 of `session`: kind `block` (sd) or `scsi_generic`."""
    return i.run(
        f"for n in $(seq 100); do for d in {session}/device/target*/*:0/{kind}/*; do "
        f"  test -e \"$d\" && echo /dev/${{d##*/}} && exit 0; done; udevadm settle; sleep 0.1; done; "
        f"ls -R {session}/device; exit 1").out.strip()


def login(i: vm.Guest, portal: str) -> str:
    i.run(f"iscsiadm -m discovery -t sendtargets -p {portal}")
    i.run(f"iscsiadm -m node -T {IQN} -p {portal} --login")
    return session_dir(i, portal)


def wait_rtpg(i: vm.Guest, sg: str, want: dict, timeout: float = 60) -> None:
    """Polls RTPG through the initiator's path until it is `want` (a unit
    attention or a recovering session may fail a try)."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        try:
            got = rtpg(i, sg)
        except vm.GuestError as e:
            got = str(e).splitlines()[0]
        if got == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"RTPG through {sg}: {got} != {want}")


def wait_unit(g: vm.Guest, timeout: float = 300) -> None:
    r = g.run(f"for n in $(seq {int(timeout * 2)}); do s=$(systemctl is-active {UNIT}); "
              f"case $s in active) exit 0;; failed) break;; esac; sleep 0.5; done; "
              f"systemctl status --no-pager {UNIT}; journalctl -b --no-pager -u {UNIT} | tail -40; exit 1",
              timeout=timeout + 30, check=False)
    assert r.rc == 0, f"{g.name}: {UNIT} not active:\n{r.out}"


def wait_logged_in(i: vm.Guest, session: str, timeout: float = 300) -> None:
    r = i.run(f"for n in $(seq {int(timeout * 2)}); do "
              f"  [ \"$(cat {session}/state)\" = LOGGED_IN ] && exit 0; sleep 0.5; done; "
              f"iscsiadm -m session -P 1; exit 1", timeout=timeout + 30, check=False)
    assert r.rc == 0, f"session {session} did not recover:\n{r.out}"


@pytest.fixture
def boot_pair(trio, accel):
    a, b, i = trio.guests["nodea"], trio.guests["nodeb"], trio.guests["initiator"]
    try:
        yield a, b, i
    finally:
        lio.logout_all(i)
        for g in (a, b):
            if not g.alive():
                # Lost in the reboot: a fresh guest, so later tests have a bed.
                g.restart(accel)
            g.run(f"systemctl disable {UNIT}; systemctl stop {UNIT}; "
                  f"test -d {NODE} && echo > {NODE}/ha_peer; targetcli-ha clearconfig confirm=True; "
                  f"rmmod tcm_ha; rm -rf /lib/modules/$(uname -r)/updates/tcm_ha.ko {SAVE} {KEY_FILE} "
                  f"{ETC}/backup; depmod -a", timeout=300, check=False)


def test_saved_settings_come_back_after_reboot(boot_pair, accel):
    a, b, i = boot_pair
    both(configure_node, [a, b])
    wait_state(a, "online")
    wait_state(b, "online")

    sa, sb = login(i, PATH_A), login(i, PATH_B)
    sd_a, sg_a, sg_b = lun_node(i, sa, "block"), lun_node(i, sa, "scsi_generic"), lun_node(i, sb, "scsi_generic")
    wait_rtpg(i, sg_a, WANT_RTPG)
    wait_rtpg(i, sg_b, WANT_RTPG)
    # Data through the primary's path, read back after the reboot.
    i.run("head -c 1M /dev/urandom > /tmp/boot-pattern")
    want = i.run("md5sum < /tmp/boot-pattern").out.split()[0]
    i.run(f"dd if=/tmp/boot-pattern of={sd_a} bs=1M seek=4 oflag=direct conv=fsync 2>&1")

    for g in (a, b):
        ha_id, role, peer, rtpi = NODES[g.name]
        out = g.run(f"targetcli-ha saveconfig", timeout=300)
        assert f"Configuration saved to {SAVE}" in out.out + out.err, out
        text = g.run(f"cat {SAVE}").out
        conf = json.loads(text)
        assert conf["tcm_ha"] == {"ha_id": ha_id, "ha_mode": 0, "failover": "manual",
                                  "ha_role": role, "ha_peer": peer}, conf["tcm_ha"]
        assert KEY not in text
        (t,) = [t for t in conf["targets"] if t["wwn"] == IQN]
        assert t["tpgs"][0]["rtpi"] == rtpi, t["tpgs"][0]
        g.run(f"systemctl daemon-reload && systemctl enable {UNIT}")
        assert g.run(f"systemctl is-enabled {UNIT}").out.strip() == "enabled"

    # Both nodes reboot at once; QEMU exits at the guest's reset (-no-reboot).
    for g in (a, b):
        try:
            g.run("systemctl --no-block reboot", timeout=30, check=False)
        except (vm.GuestError, OSError):
            # The guest may go down before the agent answers (the socket
            # is then reset).
            pass
    t0 = time.time()

    def reboot(g: vm.Guest) -> None:
        g.proc.wait(timeout=300)
        g.restart(accel, keep_root=True)
        wait_unit(g)

    both(reboot, [a, b])
    print(f"\n[boot-config] both nodes rebooted and restored in {time.time() - t0:.1f}s")

    for g in (a, b):
        ha_id, role, peer, rtpi = NODES[g.name]
        assert g.run("test -d /sys/module/tcm_ha && echo yes").out.strip() == "yes"
        got = {k: g.run(f"cat {NODE}/{k}").out.strip()
               for k in ("ha_id", "ha_mode", "ha_role", "ha_peer", "failover", "ha_key")}
        assert got == {"ha_id": str(ha_id), "ha_mode": "0", "ha_role": role, "ha_peer": peer,
                       "failover": "manual", "ha_key": "(set)"}, got
    wait_state(a, "online", timeout=60)
    wait_state(b, "online", timeout=60)
    for g in (a, b):
        ha_id, role, peer, rtpi = NODES[g.name]
        d = g.run(f"ls -d {lio.CORE}/ha_*/disk0").out.strip()
        info = " ".join(g.run(f"cat {d}/info").out.split())
        assert f"dev: /dev/vdb lun_id: {LUN_ID} ha_role: node default readonly: 0" in info, info
        assert g.run(f"cat {d}/enable").out.strip() == "1"
        assert g.run(f"cat {d}/wwn/vpd_unit_serial").out.strip().endswith(SERIAL)
        assert int(g.run(f"cat {CFS_TPG}/rtpi").out.strip(), 0) == rtpi
        assert g.run(f"cat {CFS_TPG}/enable").out.strip() == "1"

    # The initiator's sessions recover by themselves and see the states again.
    wait_logged_in(i, sa)
    wait_logged_in(i, sb)
    wait_rtpg(i, sg_a, WANT_RTPG, timeout=120)
    wait_rtpg(i, sg_b, WANT_RTPG, timeout=120)
    got = i.run(f"dd if={sd_a} bs=1M skip=4 count=1 iflag=direct 2>/dev/null | md5sum", timeout=180).out.split()[0]
    assert got == want
