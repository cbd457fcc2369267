"""Unload and reconfigure under load (issue 8, requirement 3).

- rmmod is refused on both nodes while their LUN is exported, and the LUNs
  and the interlink can be torn down while fio runs through both nodes
  (proxy mode, multibus): the commands in flight end (fio stops with the
  map's IO error once no path is left, never a hang), the devices go and
  both modules unload at once.
- TCM_HA_CYCLES (default 1 in make check, 3 in check-full; issue 8 asks for 50:
  TCM_HA_CYCLES=50 make vm-test T=test_ha_lifecycle) cycles of insmod,
  configure, link, IO through both nodes, unconfigure, rmmod on both
  nodes. Each cycle's data must read back through the other node; the
  nodes' MemAvailable must not drift, and the module's end runs the
  kmemleak scan of both nodes (conftest; in check-full, where the trio
  runs kmemleak)."""
import os
import statistics
import time

import lio
import vm
from hapair import LUN_ID, SERIAL, Pair, configure_node, loaded, map_ios, wait_map_ios, wait_paths
from test_ha_alua import link
from test_ha_proxy import stat
from test_interlink import setattr_
from test_interlink_faults import mem_available
from conftest import full_only

CYCLES = int(os.environ.get("TCM_HA_CYCLES", "3" if vm.FULL else "1"))
# The fio of hapair without the inline verification (its reads would fail
# once the paths are gone, which is what this test does on purpose).
FIO = ("fio --name=td --filename={dev} --direct=1 --ioengine=libaio --iodepth=8 --rw=randrw "
       "--bs=4k --size=64M --time_based --runtime=600 --rate_iops=300 --output-format=terse "
       "--terse-version=3")


@full_only
def test_teardown_of_luns_and_link_under_io(trio, accel):
    a, b, ini = trio.guests["nodea"], trio.guests["nodeb"], trio.guests["initiator"]
    p = Pair(a, b, ini, mode=2)
    try:
        p.up()
        p.regroup("multibus")
        wait_paths(ini, {p.devs["nodea"]: ("ready", 50), p.devs["nodeb"]: ("ready", 10)})
        for g in (a, b):
            r = g.run("rmmod tcm_ha 2>&1", check=False)
            assert r.rc != 0 and "in use" in r.out, (g.name, r.out)
        # With every path gone the map must fail IO, not queue it for ever.
        ini.run(f"dmsetup message {p.mapname} 0 fail_if_no_path")
        ini.run("rm -f /tmp/td.rc; setsid sh -c '" + FIO.format(dev=p.mpath) +
                " > /tmp/td.out 2>&1; echo $? > /tmp/td.rc' < /dev/null > /dev/null 2>&1 &")
        fwd0 = stat(b, "proxied_to_peer")
        wait_map_ios(ini, p.mpath, map_ios(ini, p.mpath) + 200)
        assert stat(b, "proxied_to_peer") > fwd0, "no IO went through B before the teardown"
        t0 = time.time()
        # B's LUN goes while IO flows through it; A's path keeps serving.
        lio.unlink_luns(b, p.tpgs["nodeb"])
        t_b = time.time() - t0
        wait_map_ios(ini, p.mpath, map_ios(ini, p.mpath), timeout=120)
        # Then the interlink, then A's LUN: no path is left.
        setattr_(a, "ha_peer", "")
        lio.unlink_luns(a, p.tpgs["nodea"])
        t_a = time.time() - t0
        r = ini.run("for i in $(seq 600); do test -e /tmp/td.rc && exit 0; sleep 0.2; done; exit 1",
                    check=False, timeout=200)
        t_fio = time.time() - t0
        out = ini.run("cat /tmp/td.out", check=False).out
        assert r.rc == 0, "fio still running 120 s after the last path went\n" + out + \
            ini.run("multipath -ll; dmesg | tail -30").out
        assert ini.run("cat /tmp/td.rc").out.strip() != "0", "fio saw no error with no path left\n" + out
        # Nothing is left to wait for: the devices go and the modules unload.
        for g in (a, b):
            lio.clear_ha(g)
            assert not g.run(f"ls {lio.CORE} | grep '^ha_'", check=False).out.strip()
            g.run("rmmod tcm_ha", timeout=60)
            assert not loaded(g)
        t_rmmod = time.time() - t0
        print(f"\n[lifecycle] under fio: B's LUN unlinked in {t_b:.1f}s, A's {t_a:.1f}s after the start "
              f"(link dropped before it), fio ended {t_fio:.1f}s, both modules unloaded {t_rmmod:.1f}s "
              f"after the start of the teardown")
    finally:
        p.down(accel)


def one_cycle(a: vm.Guest, b: vm.Guest, n: int) -> None:
    """insmod, configure, link, IO through both nodes (local tcm_loop
    disks; B's IO is done by A), unconfigure, rmmod, on both nodes."""
    disks = {}
    for g, ha_id, role in ((a, 1, "primary"), (b, 2, "secondary")):
        configure_node(g, ha_id, role, mode=2)
        lio.create_ha(g, name="c0", control=f"dev=/dev/vdc,lun_id={LUN_ID}", serial=SERIAL)
    link(a, b)
    for g, wwn in ((a, "5001405000000ac0"), (b, "5001405000000bc0")):
        # Linked, B's port is Active/Non-optimized: a disk on both nodes.
        disks[g.name] = lio.loopback_lun(g, f"{lio.CORE}/ha_0/c0", wwn, wwn[:-1] + "1")
    # 1 MiB at a cycle's own offset through B, read back through A, and
    # the other way round.
    off = 4 + 2 * (n % 60)
    for src, dst in ((b, a), (a, b)):
        src.run(f"dd if=/dev/urandom of=/tmp/cyc bs=1M count=1 status=none; "
                f"dd if=/tmp/cyc of={disks[src.name]} bs=1M seek={off} oflag=direct status=none")
        want = src.run("md5sum < /tmp/cyc").out.split()[0]
        got = dst.run(f"dd if={disks[dst.name]} bs=1M skip={off} count=1 iflag=direct status=none | md5sum"
                      ).out.split()[0]
        assert got == want, f"cycle {n}: written through {src.name}, read through {dst.name}: {got} != {want}"
    assert stat(b, "proxied_to_peer") > 0
    for g in (a, b):
        lio.clear_loopback(g)
        setattr_(g, "ha_peer", "")
        lio.clear_ha(g)
        g.run("rmmod tcm_loop && rmmod tcm_ha", timeout=60)
        assert not loaded(g), f"cycle {n}: tcm_ha still loaded on {g.name}"


@full_only
def test_load_configure_link_io_unload_cycles(trio):
    a, b = trio.guests["nodea"], trio.guests["nodeb"]
    # A first cycle outside the count warms the page cache and slabs.
    one_cycle(a, b, 0)
    mem0 = {g.name: mem_available(g) for g in (a, b)}
    times = []
    for n in range(1, CYCLES + 1):
        t0 = time.time()
        one_cycle(a, b, n)
        times.append(time.time() - t0)
    drop = {name: (kib - mem_available(g)) // 1024 for (name, kib), g in zip(mem0.items(), (a, b))}
    print(f"\n[lifecycle] {CYCLES} cycles of insmod/configure/link/IO/unconfigure/rmmod on both nodes: "
          f"median {statistics.median(times):.1f}s, max {max(times):.1f}s per cycle; "
          f"MemAvailable drop A {drop['nodea']} MiB, B {drop['nodeb']} MiB")
    assert drop["nodea"] <= 16 and drop["nodeb"] <= 16, drop
