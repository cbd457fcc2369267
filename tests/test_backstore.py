"""The `ha` backstore in LIO: registration, HBA and device lifecycle, the
control string and its errors (issue 3, first part: no data path yet)."""
import pytest

import vm

CORE = "/sys/kernel/config/target/core"


def write(g: vm.Guest, path: str, value: str) -> vm.Result:
    return g.run(f"echo -n {vm.q(value)} > {path}", check=False)


@pytest.fixture
def ha(node):
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    yield node
    node.run(f"for d in {CORE}/ha_*/*/; do rmdir $d; done 2>/dev/null; "
             f"for h in {CORE}/ha_*; do rmdir $h; done 2>/dev/null; true")
    node.run("rmmod tcm_ha")


def test_backend_registered(ha):
    ha.run(f"mkdir -p {CORE}/ha_0/d0")
    assert "registered" in ha.run("dmesg | grep 'tcm_ha: version'").out
    assert ha.run(f"cat {CORE}/ha_0/hba_info").rc == 0


def test_control_string_and_info(ha):
    d = f"{CORE}/ha_0/d0"
    ha.run(f"mkdir -p {d}")
    assert write(ha, f"{d}/control", "dev=/dev/vdb,lun_id=7,ha_role=secondary").rc == 0
    info = ha.run(f"cat {d}/info").out
    assert "dev: /dev/vdb lun_id: 7 ha_role: secondary readonly: 0" in info, info


@pytest.mark.parametrize("value,key", [
    ("lun_id=99999", "'lun_id'"),
    ("colour=blue", "'colour'"),
    ("ha_role=master", "'ha_role'"),
    ("readonly=yes", "'readonly'"),
    ("dev=vdb", "'dev'"),
    ("dev", "'dev'"),
])
def test_control_errors_name_key_and_value(ha, value, key):
    d = f"{CORE}/ha_0/d0"
    ha.run(f"mkdir -p {d}")
    ha.run("dmesg -C")
    r = write(ha, f"{d}/control", value)
    assert r.rc != 0 and "Invalid argument" in r.err, r
    log = ha.run("dmesg").out
    assert "tcm_ha: d0: control:" in log and key in log, log
    # Nothing changed and the device is still usable.
    assert write(ha, f"{d}/control", "dev=/dev/vdb").rc == 0


def test_enable_requires_dev(ha):
    d = f"{CORE}/ha_0/nodev"
    ha.run(f"mkdir -p {d}")
    r = write(ha, f"{d}/enable", "1")
    assert r.rc != 0 and "Invalid argument" in r.err, r
    assert "nodev: enable: no backing device" in ha.run("dmesg").out


def test_enable_and_busy(ha):
    d0, d1 = f"{CORE}/ha_0/d0", f"{CORE}/ha_0/d1"
    ha.run(f"mkdir -p {d0} {d1}")
    assert write(ha, f"{d0}/control", "dev=/dev/vdb").rc == 0
    assert write(ha, f"{d0}/enable", "1").rc == 0
    info = ha.run(f"cat {d0}/info").out
    assert f"capacity: {256 * 2048} sectors, block size 512" in info, info
    # The backing path cannot change while enabled; other keys can.
    r = write(ha, f"{d0}/control", "dev=/dev/vda")
    assert r.rc != 0 and "busy" in r.err, r
    assert write(ha, f"{d0}/control", "lun_id=3").rc == 0
    # A second device on the same block device is refused: it is claimed.
    assert write(ha, f"{d1}/control", "dev=/dev/vdb").rc == 0
    r = write(ha, f"{d1}/enable", "1")
    assert r.rc != 0 and "busy" in r.err, r
    assert "d1: enable: cannot open dev=/dev/vdb: error -16" in ha.run("dmesg").out
    # A missing device is reported with its errno.
    assert write(ha, f"{d1}/control", "dev=/dev/nonexistent").rc == 0
    assert write(ha, f"{d1}/enable", "1").rc != 0


def test_rmmod_refused_while_hba_exists(ha):
    ha.run(f"mkdir -p {CORE}/ha_0/d0")
    r = ha.run("rmmod tcm_ha", check=False)
    assert r.rc != 0 and "in use" in r.err, r
    assert "tcm_ha" in ha.run("lsmod").out


def test_create_delete_cycles(ha):
    for i in range(20):
        d = f"{CORE}/ha_{i % 3}/d{i}"
        ha.run(f"mkdir -p {d} && echo -n dev=/dev/vdb > {d}/control && echo 1 > {d}/enable && "
               f"cat {d}/info >/dev/null && rmdir {d} && rmdir {CORE}/ha_{i % 3}")
