#!/usr/bin/env python3
"""make bench-local: the `ha` backstore against stock iblock, both exported
through tcm_loop in one guest, printed side by side as ratios (issue 3:
ha/iblock >= 0.97 IOPS, >= 0.98 MB/s; 4k random at QD1 and QD32 with
p50/p99 completion latency, 1M sequential). Under TCG absolute numbers mean
little and the host's speed drifts by tens of percent within minutes, so
the two run as adjacent pairs: both backends are exported at once, on two
equal disks (/dev/vdb, /dev/vdc, swapped every round), and each job runs on
one and then the other (order alternating). The verdict is the median of
the per-pair ratios. Where the time goes is printed beside it: the guest's
CPU time per IO (its one vCPU is what the queued jobs saturate), what the
backing disk saw per IO (extra writes or flushes), and the settings of the
two SCSI disks' queues that differ. Exits non-zero only on an error."""
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import lio  # noqa: E402
import vm  # noqa: E402
from bench_common import JOBS, fio_probed, queue_settings, save_results  # noqa: E402

ROUNDS = int(__import__("os").environ.get("ROUNDS", "3"))
RUNTIME = int(__import__("os").environ.get("RUNTIME", "10"))
# Target ratio (ha / iblock) per metric.
TARGETS = {"iops": 0.97, "MB/s": 0.98}


# CONTROL=iblock: an A/A run, the `ha` side replaced by a second iblock
# device: its ratios show how far the test bed's noise alone moves them.
CONTROL = __import__("os").environ.get("CONTROL") == "iblock"


def export(g: vm.Guest, backend: str, disk: str) -> str:
    """Creates the backend's device on `disk` and exports it; returns /dev/sdX."""
    if backend == "iblock" or CONTROL:
        n = 0 if backend == "iblock" else 1
        d = f"{lio.CORE}/iblock_{n}/bench"
        g.run(f"mkdir -p {d} && echo -n udev_path={disk} > {d}/control && echo 1 > {d}/enable")
        wwn = "5001405000000e00" if n == 0 else "5001405000000f00"
    else:
        d = lio.create_ha(g, name="bench", control=f"dev={disk}")
        wwn = "5001405000000f00"
    return lio.loopback_lun(g, d, wwn, wwn[:-1] + "1")


def unexport(g: vm.Guest) -> None:
    lio.clear_loopback(g)
    g.run(f"for n in 0 1; do rmdir {lio.CORE}/iblock_$n/bench {lio.CORE}/iblock_$n; done 2>/dev/null; true")
    lio.clear_ha(g)


def _wf(cost: dict) -> str:
    return f"{cost['backing_writes_per_io']:.2f}+{cost['backing_flushes_per_io']:.2f}"


def main() -> int:
    t0 = time.time()
    out = vm.REPO / "tests" / "out" / ("bench-local-" + time.strftime("%Y%m%d-%H%M%S"))
    accel = vm.probe_accel()
    bed = vm.Bed(out)
    # Without kmemleak and lockdep's proving (boot parameters of the same
    # kernel), as a production kernel runs: both tax every allocation and
    # lock, and the two backends do not take the same number of either.
    g = bed.guest("nodea", kmemleak=False, lockdep=False)
    # The two disks live in tmpfs: written through the host's page cache
    # to the host's disk, a write job's speed followed the host's
    # writeback (pair ratios of one job spread over 0.6-1.2).
    shm = Path(tempfile.mkdtemp(prefix="tcm_ha-bench-", dir="/dev/shm"))
    g.add_disk(256, "disk1", shm)
    g.add_disk(256, "disk2", shm)
    print(f"[bench-local] booting one node ({accel}, kmemleak and lockdep proving off); {ROUNDS} rounds x {len(JOBS)} jobs x "
          f"{RUNTIME}s per backend, in adjacent pairs"
          + ("; CONTROL=iblock: the `ha` column is a second iblock device" if CONTROL else ""))
    results = {b: {j[0]: [] for j in JOBS} for b in ("iblock", "ha")}
    pairs = {j[0]: [] for j in JOBS}
    costs = {b: {j[0]: [] for j in JOBS} for b in ("iblock", "ha")}
    try:
        bed.start(accel, leak_baseline=False)
        vm.load_tcm_ha(g)
        g.run("modprobe tcm_loop; for d in /dev/vdb /dev/vdc; do "
              "dd if=/dev/urandom of=$d bs=1M count=192 oflag=direct status=none; done", timeout=600)
        for rnd in range(ROUNDS):
            disks = ("/dev/vdb", "/dev/vdc") if rnd % 2 == 0 else ("/dev/vdc", "/dev/vdb")
            sds = {b: export(g, b, d) for b, d in zip(("iblock", "ha"), disks)}
            backing = dict(zip(("iblock", "ha"), disks))
            if rnd == 0:
                qs = {b: queue_settings(g, sds[b]) for b in sds}
                differ = {k: (qs["iblock"].get(k), qs["ha"].get(k)) for k in qs["iblock"]
                          if qs["iblock"].get(k) != qs["ha"].get(k)}
                print(f"[bench-local] SCSI disk queue settings that differ (iblock, ha): {differ or 'none'}")
            try:
                for i, (name, args, metric) in enumerate(JOBS):
                    # Alternate the order so drift in the host's speed hits both alike.
                    order = ("iblock", "ha") if (rnd + i) % 2 == 0 else ("ha", "iblock")
                    got = {}
                    for backend in order:
                        *got[backend], cost = fio_probed(g, sds[backend], backing[backend], args, metric,
                                                         "192M", RUNTIME)
                        results[backend][name].append(got[backend])
                        costs[backend][name].append(cost)
                    ratio = got["ha"][0] / got["iblock"][0] if got["iblock"][0] else 0.0
                    pairs[name].append(ratio)
                    c = {b: costs[b][name][-1] for b in costs}
                    print(f"[bench-local] round {rnd + 1} {name:18} iblock {got['iblock'][0]:8.1f} "
                          f"ha {got['ha'][0]:8.1f} {metric:5} ratio {ratio:.3f} "
                          f"(p99 {got['iblock'][2]:.2f} / {got['ha'][2]:.2f} ms; guest CPU per IO "
                          f"{c['iblock']['cpu_us_per_io']:.0f} / {c['ha']['cpu_us_per_io']:.0f} us; backing "
                          f"writes+flushes per IO {_wf(c['iblock'])} / {_wf(c['ha'])})", flush=True)
            finally:
                unexport(g)
        g.run("rmmod tcm_loop; rmmod tcm_ha")
        splat = vm.splats(g.new_console())
        if splat:
            print("[bench-local] kernel splat:\n" + "\n".join(splat))
            return 1
    finally:
        bed.stop()
        shutil.rmtree(shm, ignore_errors=True)
    rows = []
    print("\n| job | metric | iblock (median) | ha (median) | p50 ms iblock/ha | p99 ms iblock/ha | "
          "guest CPU us/IO iblock/ha | ha/iblock (median of pairs) | pairs min-max | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, _, metric in JOBS:
        target = TARGETS[metric]
        med = {b: [statistics.median(r[k] for r in results[b][name]) for k in range(3)] for b in results}
        cpu = {b: statistics.median(c["cpu_us_per_io"] for c in costs[b][name]) for b in costs}
        ratio = statistics.median(pairs[name])
        rows.append({"job": name, "metric": metric, "iblock": [r[0] for r in results["iblock"][name]],
                     "ha": [r[0] for r in results["ha"][name]], "pair_ratios": pairs[name], "ratio": ratio,
                     "target": target, "p50_ms": {b: med[b][1] for b in med}, "p99_ms": {b: med[b][2] for b in med},
                     "cost": {b: costs[b][name] for b in costs}})
        mark = "met" if ratio >= target else "MISSED"
        print(f"| {name} | {metric} | {med['iblock'][0]:.1f} | {med['ha'][0]:.1f} | "
              f"{med['iblock'][1]:.2f} / {med['ha'][1]:.2f} | {med['iblock'][2]:.2f} / {med['ha'][2]:.2f} | "
              f"{cpu['iblock']:.0f} / {cpu['ha']:.0f} | "
              f"{ratio:.3f} | {min(pairs[name]):.2f}-{max(pairs[name]):.2f} | >= {target} ({mark}) |")
    save_results("local-control" if CONTROL else "local", {"accel": accel, "rounds": ROUNDS, "runtime_s": RUNTIME}, rows, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
