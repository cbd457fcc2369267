"""Stock LIO on the bed: iSCSI export, fio verify, and dm-multipath over two
paths. A check of the bed itself, which every HA test uses the same way: it
runs in make check-full (about 3 min under TCG)."""
import re

import pytest

import lio
import vm
from conftest import PATH_A, PATH_B

SERIAL = "5001405aa0000001"
pytestmark = pytest.mark.skipif(not vm.FULL, reason="stock LIO on the bed: make check-full")


def test_iblock_iscsi_fio_verify(trio):
    a, i = trio.guests["nodea"], trio.guests["initiator"]
    lio.export_iblock(a, PATH_A, [lio.initiator_iqn(i)], SERIAL)
    try:
        dev = lio.login(i, PATH_A)
        assert i.run(f"blockdev --getsize64 {dev}").out.strip() == str(256 << 20)
        lio.fio_verify(i, dev)
    finally:
        lio.logout_all(i)
        lio.clear_target(a)


def test_multipath_two_paths_one_lun(trio):
    a, b, i = trio.guests["nodea"], trio.guests["nodeb"], trio.guests["initiator"]
    iqn = lio.initiator_iqn(i)
    lio.export_iblock(a, PATH_A, [iqn], SERIAL)
    lio.export_iblock(b, PATH_B, [iqn], SERIAL)
    try:
        lio.login(i, PATH_A)
        lio.login(i, PATH_B)
        # The test kernel has dm-round-robin, not the default service-time.
        # find_multipaths no: multipath-tools' default (strict) only maps
        # WWIDs already in /etc/multipath/wwids.
        i.run("printf 'defaults {\\n    path_selector \"round-robin 0\"\\n    find_multipaths no\\n}\\n' "
              "> /etc/multipath.conf")
        i.run("modprobe dm-multipath && systemctl restart multipathd && udevadm settle && multipath -r")
        paths = i.run('multipathd show paths raw format "%w %d %t"').out.split("\n")
        rows = [p.split() for p in paths if p.strip()]
        wwids = {r[0] for r in rows}
        assert len(rows) == 2 and len(wwids) == 1, paths
        maps = i.run("for n in $(seq 100); do m=$(dmsetup ls --target multipath | awk '$1 != \"No\" {print $1}'); "
                     "test -n \"$m\" && echo $m && exit 0; sleep 0.2; done; "
                     "multipath -v3 2>&1 | tail -40; journalctl -u multipathd | tail -20; exit 1").out.split()
        assert len(maps) == 1, maps
        deps = i.run(f"dmsetup deps -o devname {maps[0]}").out
        assert deps.startswith("2 dependencies"), deps
        mp = f"/dev/mapper/{maps[0]}"
        # A read through the map works; writes would diverge (two unshared disks).
        i.run(f"dd if={mp} of=/dev/null bs=1M count=8 iflag=direct")
        assert re.search(r"status=active", i.run("multipath -ll").out)
    finally:
        i.run("multipath -F; systemctl stop multipathd multipathd.socket; rm -f /etc/multipath.conf", check=False)
        lio.logout_all(i)
        lio.clear_target(a)
        lio.clear_target(b)
