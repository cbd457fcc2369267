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
