"""The tcm_ha module loads and unloads cleanly in a guest."""
import re

import vm


def version() -> str:
    return (vm.REPO / "VERSION").read_text().strip()


def test_insmod_rmmod(node):
    for _ in range(3):
        node.run("dmesg -C")
        vm.load_tcm_ha(node)
        assert "tcm_ha" in node.run("lsmod").out
        log = node.run("dmesg").out
        lines = [l for l in log.splitlines() if "tcm_ha:" in l and "loaded" in l]
        assert len(lines) == 1, log
        assert re.search(rf"tcm_ha: version {re.escape(version())} loaded", lines[0]), lines[0]
        node.run("rmmod tcm_ha")
        assert "tcm_ha" not in node.run("lsmod").out
        assert "tcm_ha: unloaded" in node.run("dmesg").out


def test_modinfo(node):
    info = node.run("modinfo /mnt/repo/tcm_ha.ko").out
    assert re.search(rf"^version:\s+{re.escape(version())}$", info, re.M), info
    assert re.search(r"^license:\s+GPL", info, re.M), info
    assert re.search(r"^description:\s+\S", info, re.M), info
    for p in ("ha_id", "ha_mode", "secondary", "auto_failover"):
        assert re.search(rf"^parm:\s+{p}:\S.*\((u8|bool)\)$", info, re.M), (p, info)


NODE = "/sys/kernel/config/tcm_ha"


def test_parameters_set_the_node_settings_at_load(node):
    node.run("modprobe target_core_mod && insmod /mnt/repo/tcm_ha.ko ha_id=2 ha_mode=2 secondary=1 auto_failover=1")
    try:
        got = {k: node.run(f"cat {NODE}/{k}").out.strip() for k in ("ha_id", "ha_mode", "ha_role", "failover")}
        assert got == {"ha_id": "2", "ha_mode": "2", "ha_role": "secondary", "failover": "auto"}, got
        # configfs changes them afterwards.
        node.run(f"echo 1 > {NODE}/ha_id && echo primary > {NODE}/ha_role")
        assert node.run(f"cat {NODE}/ha_id {NODE}/ha_role").out.split() == ["1", "primary"]
    finally:
        node.run("rmmod tcm_ha")
    node.run("insmod /mnt/repo/tcm_ha.ko")
    try:
        got = {k: node.run(f"cat {NODE}/{k}").out.strip() for k in ("ha_id", "ha_mode", "ha_role", "failover")}
        assert got == {"ha_id": "0", "ha_mode": "0", "ha_role": "primary", "failover": "manual"}, got
    finally:
        node.run("rmmod tcm_ha")


def test_bad_parameters_refuse_the_load(node):
    for arg, line in (("ha_id=3", "module parameter ha_id=3: expected 0, 1 or 2"),
                      ("ha_mode=7", "module parameter ha_mode=7: expected 0 (active/standby)")):
        node.run("dmesg -C")
        r = node.run(f"insmod /mnt/repo/tcm_ha.ko {arg}", check=False)
        # kmod words EINVAL from init_module as "Invalid parameters".
        assert r.rc != 0 and "Invalid parameters" in r.err, r
        assert node.run("test -d /sys/module/tcm_ha", check=False).rc != 0
        assert f"tcm_ha: {line}" in node.run("dmesg").out
