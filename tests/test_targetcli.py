"""targetcli-ha (tools/targetcli-ha, issue 3 requirement 6): the guest's
stock targetcli-fb/rtslib-fb with the `ha` backstore registered. Create,
list, bad values, iSCSI and loopback LUNs with IO, saveconfig, clearconfig
and restoreconfig round trip, delete, and targetctl-ha."""
import json
import re

import pytest

import lio
import vm
from conftest import full_only

# make check runs this module on the single node without kmemleak and
# lockdep's proving (conftest._single_fast): its time goes to userspace
# tools; check-full runs it with both.
NODE_CHECKS = False

TCLI = "targetcli-ha"
SERIAL = "5001405feedbe001"
IQN = "iqn.2026-11.org.tcm-ha:tcli"
LOOP_WWN = "naa.5001405000000c01"
SAVE = "/tmp/tcli-save.json"


def tcli(g: vm.Guest, cmd: str, check: bool = True) -> vm.Result:
    return g.run(f"{TCLI} {cmd}", timeout=300, check=check)


def ha_dirs(g: vm.Guest) -> list[str]:
    """Every `ha` device directory in configfs (core/ha_N/<name>)."""
    out = g.run(f"ls -d {lio.CORE}/ha_*/*/ 2>/dev/null; true").out
    return [p.rstrip("/") for p in out.split()]


def ha_hbas(g: vm.Guest) -> list[str]:
    return g.run(f"ls -d {lio.CORE}/ha_* 2>/dev/null; true").out.split()


def device_line(ls_out: str, name: str) -> str:
    """The `o- <name> ....... [summary]` line of an `ls` listing."""
    for line in ls_out.splitlines():
        if re.search(rf"o- {re.escape(name)} \.", line):
            return line
    raise AssertionError(f"no line for {name} in:\n{ls_out}")


@pytest.fixture
def tnode(node):
    """The node with tcm_ha loaded; afterwards everything is cleared and the
    modules are unloaded (rmmod tcm_ha fails if an `ha` HBA was left)."""
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    try:
        yield node
    finally:
        node.run(f"{TCLI} clearconfig confirm=True", check=False)
        lio.clear_loopback(node)
        lio.clear_ha(node)
        node.run(f"rm -f {SAVE} /tmp/tcli-ctl.json; "
                 "rmdir /sys/kernel/config/target/loopback 2>/dev/null; "
                 "rmmod tcm_loop 2>/dev/null; true")
        node.run("rmmod tcm_ha")


def create_disk0(g: vm.Guest, extra: str = "lun_id=1 ha_role=primary") -> str:
    r = tcli(g, f"/backstores/ha create name=disk0 dev=/dev/vdb wwn={SERIAL} {extra}")
    assert "Created ha storage object disk0 using /dev/vdb." in r.out + r.err, r
    dirs = ha_dirs(g)
    assert len(dirs) == 1 and dirs[0].endswith("/disk0"), dirs
    return dirs[0]


@full_only
def test_installed_in_the_image(node):
    """The image carries the package and both commands, and they run with
    the distribution's python3 (no source tree on the path)."""
    assert node.run(f"command -v {TCLI} targetctl-ha").out.split() == [
        "/usr/local/bin/targetcli-ha", "/usr/local/bin/targetctl-ha"]
    r = node.run("cd / && python3 -c 'import tcm_ha_targetcli, rtslib_fb.tcm as t; "
                 "tcm_ha_targetcli.register(); print(t.so_mapping[\"ha\"].__name__)'")
    assert r.out.strip() == "HaStorageObject", r


def test_create_and_ls(tnode):
    g = tnode
    d = create_disk0(g)
    assert g.run(f"cat {d}/enable").out.strip() == "1"
    info = " ".join(g.run(f"cat {d}/info").out.split())
    assert "HA device: disk0 dev: /dev/vdb lun_id: 1 ha_role: primary readonly: 0" in info, info
    assert g.run(f"cat {d}/wwn/vpd_unit_serial").out.strip() == f"T10 VPD Unit Serial Number: {SERIAL}"
    assert g.run(f"cat {d}/udev_path").out.strip() == "/dev/vdb"
    out = tcli(g, "ls").out
    assert re.search(r"o- ha \.+ \[Storage Objects: 1\]", out), out
    line = device_line(out, "disk0")
    assert "[/dev/vdb (256.0MiB) lun_id=1 ha_role=primary deactivated]" in line, line
    # `info` on the object shows the settings rtslib reads back from the module.
    info = tcli(g, "/backstores/ha/disk0 info")
    text = info.out + info.err
    for want in ("dev: /dev/vdb", "lun_id: 1", "ha_role: primary", "plugin: ha",
                 "readonly: False", f"wwn: {SERIAL}"):
        assert want in text, text


# Each bad value, with the message the admin must see. One test walks them
# all on one loaded module (a module load and a targetcli start per case
# cost about 20 s under TCG); each case is still checked on its own.
BAD_VALUES = [
    ("name=bad dev=/dev/vdb ha_role=bogus", "bad value 'bogus' for ha_role: expected primary or secondary"),
    ("name=bad", "dev= is required"),
    ("name=bad dev=/dev/vdb lun_id=16384", "bad value '16384' for lun_id"),
    ("name=bad dev=/dev/vdb lun_id=-1", "bad value '-1' for lun_id"),
    ("name=bad dev=/dev/vdb readonly=maybe", "bad value 'maybe' for readonly"),
    ("name=bad dev=/dev/nosuchdisk", "dev=/dev/nosuchdisk: No such file or directory"),
    ("name=bad dev=/etc/hostname", "dev=/etc/hostname is not a block device"),
    ("name=bad dev=vdb", "bad value 'vdb' for dev: expected an absolute path"),
]


def test_bad_values_create_nothing(tnode):
    g = tnode
    wrong = []
    for args, message in BAD_VALUES:
        r = tcli(g, f"/backstores/ha create {args}", check=False)
        left = ha_hbas(g)
        if r.rc == 0 or message not in r.out + r.err or left:
            wrong.append(f"create {args}: rc {r.rc}, wanted {message!r}, HBAs left {left}\n{r.out}{r.err}")
            lio.clear_ha(g)
    assert not wrong, "\n".join(wrong)
    assert re.search(r"o- ha \.+ \[Storage Objects: 0\]", tcli(g, "ls").out)


@full_only
def test_refused_by_the_module_is_rolled_back(tnode):
    """A failure after the configfs directory exists (the module cannot open
    a device another `ha` object holds) removes the half-made object and its
    HBA, and leaves the first object working."""
    g = tnode
    d = create_disk0(g)
    r = tcli(g, "/backstores/ha create name=disk1 dev=/dev/vdb", check=False)
    assert r.rc != 0, r
    assert "ha/disk1: cannot enable on dev=/dev/vdb: Device or resource busy" in r.out + r.err, r
    assert ha_dirs(g) == [d], ha_dirs(g)
    assert len(ha_hbas(g)) == 1, ha_hbas(g)
    assert "disk1: enable: cannot open dev=/dev/vdb: error -16" in g.run("dmesg").out
    assert tcli(g, "/backstores/ha create name=disk0 dev=/dev/vdb", check=False).rc != 0
    assert "[Storage Objects: 1]" in device_line(tcli(g, "ls").out, "ha")


def loopback_disk(g: vm.Guest) -> str:
    """The SCSI disk of the loopback target LOOP_WWN (LUN 0)."""
    return lio.loopback_node(g, f"{lio.LOOP}/{LOOP_WWN}/tpgt_1")


def map_iscsi_and_loopback(g: vm.Guest) -> None:
    tpg = f"/iscsi/{IQN}/tpg1"
    tcli(g, f"/iscsi create {IQN}")
    tcli(g, f"{tpg}/luns create /backstores/ha/disk0")
    tcli(g, f"{tpg} set attribute authentication=0 demo_mode_write_protect=0 "
            f"generate_node_acls=1 cache_dynamic_acls=1")
    g.run("modprobe tcm_loop")
    tcli(g, f"/loopback create {LOOP_WWN}")
    tcli(g, f"/loopback/{LOOP_WWN}/luns create /backstores/ha/disk0")


def lun_links(g: vm.Guest) -> dict[str, str]:
    """fabric -> the device directory its LUN 0 links to."""
    out = {}
    for fabric, tpg in (("iscsi", f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1"),
                        ("loopback", f"{lio.LOOP}/{LOOP_WWN}/tpgt_1")):
        r = g.run(f"for l in {tpg}/lun/lun_0/*; do test -L $l && readlink -f $l; done; true")
        out[fabric] = r.out.strip()
    return out


def test_iscsi_and_loopback_luns_with_io(tnode):
    g = tnode
    d = create_disk0(g)
    map_iscsi_and_loopback(g)
    assert lun_links(g) == {"iscsi": d, "loopback": d}
    out = tcli(g, "ls").out
    assert "[ha/disk0 (/dev/vdb)" in device_line(out, "lun0"), out
    assert len(re.findall(r"o- lun0 \.+ \[ha/disk0 \(/dev/vdb\)", out)) == 2, out
    assert "activated]" in device_line(out, "disk0")
    # IO through the loopback LUN lands on the backing device.
    sd = loopback_disk(g)
    g.run(f"head -c 2M /dev/urandom > /tmp/tcli-p && dd if=/tmp/tcli-p of={sd} bs=1M seek=5 "
          f"oflag=direct 2>/dev/null")
    want = g.run("md5sum < /tmp/tcli-p").out.split()[0]
    back = g.run("dd if=/dev/vdb bs=1M skip=5 count=2 iflag=direct 2>/dev/null | md5sum").out.split()[0]
    front = g.run(f"dd if={sd} bs=1M skip=5 count=2 iflag=direct 2>/dev/null | md5sum").out.split()[0]
    assert want == back == front
    assert f"Unit serial number: {SERIAL}" in g.run(f"sg_inq {sd}").out
    # The iSCSI LUN answers too (libiscsi, no initiator login needed).
    url = f"iscsi://127.0.0.1/{IQN}/0"
    assert f"Unit Serial Number:[{SERIAL}]" in g.run(f"iscsi-inq -e 1 -c 128 {url}").out
    assert "Total size:268435456" in g.run(f"iscsi-readcapacity16 {url}").out


def test_saveconfig_clearconfig_restoreconfig(tnode):
    g = tnode
    create_disk0(g, "lun_id=7 ha_role=secondary readonly=1")
    map_iscsi_and_loopback(g)
    r = tcli(g, f"saveconfig {SAVE}")
    assert f"Configuration saved to {SAVE}" in r.out + r.err, r
    conf = json.loads(g.run(f"cat {SAVE}").out)
    (so,) = [s for s in conf["storage_objects"] if s["plugin"] == "ha"]
    assert {k: so[k] for k in ("name", "dev", "lun_id", "ha_role", "readonly", "wwn")} == {
        "name": "disk0", "dev": "/dev/vdb", "lun_id": 7, "ha_role": "secondary",
        "readonly": True, "wwn": SERIAL}, so
    luns = {t["fabric"]: [lun["storage_object"] for tpg in t["tpgs"] for lun in tpg["luns"]]
            for t in conf["targets"]}
    assert luns == {"iscsi": ["/backstores/ha/disk0"], "loopback": ["/backstores/ha/disk0"]}, luns

    r = tcli(g, "clearconfig confirm=True")
    assert "All configuration cleared" in r.out + r.err, r
    assert ha_hbas(g) == [] and lun_links(g) == {"iscsi": "", "loopback": ""}

    r = tcli(g, f"restoreconfig {SAVE}")
    assert f"Configuration restored from {SAVE}" in r.out + r.err, r
    (d,) = ha_dirs(g)
    info = " ".join(g.run(f"cat {d}/info").out.split())
    assert "HA device: disk0 dev: /dev/vdb lun_id: 7 ha_role: secondary readonly: 1" in info, info
    assert g.run(f"cat {d}/enable").out.strip() == "1"
    assert g.run(f"cat {d}/wwn/vpd_unit_serial").out.strip().endswith(SERIAL)
    assert lun_links(g) == {"iscsi": d, "loopback": d}
    out = tcli(g, "ls").out
    assert "lun_id=7 ha_role=secondary ro activated]" in device_line(out, "disk0"), out
    assert len(re.findall(r"o- lun0 \.+ \[ha/disk0 \(/dev/vdb\)", out)) == 2, out
    # A second save of the restored state is the same configuration.
    tcli(g, "saveconfig /tmp/tcli-save2.json")
    again = json.loads(g.run("cat /tmp/tcli-save2.json; rm -f /tmp/tcli-save2.json").out)
    (so2,) = [s for s in again["storage_objects"] if s["plugin"] == "ha"]
    assert so2 == so


def test_delete_and_stock_targetcli(tnode):
    g = tnode
    create_disk0(g)
    g.run("modprobe tcm_loop")
    tcli(g, f"/loopback create {LOOP_WWN}")
    tcli(g, f"/loopback/{LOOP_WWN}/luns create /backstores/ha/disk0")
    # Why targetcli-ha exists: the stock tool cannot list an `ha` object.
    stock = g.run("targetcli ls", check=False)
    assert stock.rc != 0 and "'ha'" in stock.out + stock.err, stock
    r = tcli(g, "/backstores/ha delete disk0")
    assert "Deleted storage object disk0." in r.out + r.err, r
    assert ha_hbas(g) == [] and lun_links(g)["loopback"] == ""
    # With no `ha` object left, the stock tool lists again (its LUN went too).
    out = g.run("targetcli ls").out
    assert LOOP_WWN in out and re.search(r"o- luns \.+ \[LUNs: 0\]", out), out
    r = tcli(g, "/backstores/ha delete disk0", check=False)
    assert r.rc != 0 and "No storage object named disk0." in r.out + r.err, r


@full_only
def test_targetctl_ha_round_trip(tnode):
    g = tnode
    create_disk0(g, "lun_id=3")
    g.run("targetctl-ha save /tmp/tcli-ctl.json")
    assert '"plugin": "ha"' in g.run("cat /tmp/tcli-ctl.json").out
    g.run("targetctl-ha clear")
    assert ha_hbas(g) == []
    g.run("targetctl-ha restore /tmp/tcli-ctl.json")
    (d,) = ha_dirs(g)
    info = " ".join(g.run(f"cat {d}/info").out.split())
    assert "dev: /dev/vdb lun_id: 3 ha_role: node default readonly: 0" in info, info
