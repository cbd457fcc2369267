#!/usr/bin/env python3
"""make bench-pair: the secondary's path against the primary's path in the
Active/Active modes (issue 6), measured side by side in one run: node A
(primary) and node B (secondary) export one LUN over iSCSI, first in mode 2
(proxy: B hands its IO to A; targets secondary/primary >= 0.6 for 4k IOPS,
>= 0.9 for 1M MB/s), then in mode 1 (shared storage: B does its own IO
after A ordered it; target >= 0.8). The initiator runs each job on A's
path device and on B's path device in adjacent pairs (order alternating),
and the verdict is the median of the per-pair ratios. Under TCG absolute
numbers mean little; the ratios are what counts. MODES="2 1" chooses the
modes. Exits non-zero only on an error, not on a missed target."""
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vm  # noqa: E402
from bench_common import JOBS, fio, save_results, splats, trio_bed  # noqa: E402
from hapair import Pair, wait_paths  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
RUNTIME = int(os.environ.get("RUNTIME", "10"))
MODES = [int(m) for m in os.environ.get("MODES", "2 1").split()]
# Target ratio (secondary / primary) per mode and metric.
TARGETS = {2: {"iops": 0.6, "MB/s": 0.9}, 1: {"iops": 0.8, "MB/s": 0.8}}


def measure(p: Pair, mode: int) -> tuple[dict, dict]:
    """Runs every job ROUNDS times on both paths of the configured pair;
    returns the rates per path and job, and the per-pair ratios per job."""
    ini = p.ini
    devs = {"primary": p.devs["nodea"], "secondary": p.devs["nodeb"]}
    wait_paths(ini, {devs["primary"]: ("ready", 50), devs["secondary"]: ("ready", 10)})
    results = {path: {j[0]: [] for j in JOBS} for path in ("primary", "secondary")}
    pairs = {j[0]: [] for j in JOBS}
    for rnd in range(ROUNDS):
        for i, (name, args, metric) in enumerate(JOBS):
            order = ("primary", "secondary") if (rnd + i) % 2 == 0 else ("secondary", "primary")
            got = {}
            for path in order:
                got[path] = fio(ini, f"/dev/{devs[path]}", args, metric, "128M", RUNTIME)
                results[path][name].append(got[path])
            ratio = got["secondary"][0] / got["primary"][0] if got["primary"][0] else 0.0
            pairs[name].append(ratio)
            print(f"[bench-pair] mode {mode} round {rnd + 1} {name:18} primary {got['primary'][0]:8.1f} "
                  f"secondary {got['secondary'][0]:8.1f} {metric:5} ratio {ratio:.3f} "
                  f"(p99 {got['primary'][2]:.1f} / {got['secondary'][2]:.1f} ms)", flush=True)
    return results, pairs


def main() -> int:
    t0 = time.time()
    bed, accel = trio_bed("pair")
    print(f"[bench-pair] booting node A, node B and the initiator ({accel}); modes {MODES}, {ROUNDS} rounds "
          f"x {len(JOBS)} jobs x {RUNTIME}s per path, in adjacent pairs", flush=True)
    measured = {}
    stats = {}
    try:
        bed.start(accel, leak_baseline=False)
        for mode in MODES:
            p = Pair(bed.guests["nodea"], bed.guests["nodeb"], bed.guests["initiator"], mode=mode)
            p.up()
            measured[mode] = measure(p, mode)
            stats[mode] = {g.name: g.run("cat /sys/kernel/config/tcm_ha/stats").out for g in (p.a, p.b)}
            p.down(accel)
        if splats(bed, "pair"):
            return 1
    finally:
        bed.stop()
    rows = []
    print("\n| mode | job | metric | primary path (median) | secondary path (median) | p99 ms prim/sec | "
          "secondary/primary (median of pairs) | pairs min-max | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, (results, pairs) in measured.items():
        for name, _, metric in JOBS:
            target = TARGETS[mode][metric]
            prim = statistics.median(r[0] for r in results["primary"][name])
            sec = statistics.median(r[0] for r in results["secondary"][name])
            p99 = (statistics.median(r[2] for r in results["primary"][name]),
                   statistics.median(r[2] for r in results["secondary"][name]))
            ratio = statistics.median(pairs[name])
            rows.append({"mode": mode, "job": f"mode {mode} {name}", "metric": metric,
                         "primary": [r[0] for r in results["primary"][name]],
                         "secondary": [r[0] for r in results["secondary"][name]],
                         "pair_ratios": pairs[name], "ratio": ratio, "target": target,
                         "p50_ms": {path: statistics.median(r[1] for r in results[path][name]) for path in results},
                         "p99_ms": {path: statistics.median(r[2] for r in results[path][name]) for path in results}})
            mark = "met" if ratio >= target else "MISSED"
            print(f"| {mode} | {name} | {metric} | {prim:.1f} | {sec:.1f} | {p99[0]:.1f} / {p99[1]:.1f} | "
                  f"{ratio:.3f} | {min(pairs[name]):.2f}-{max(pairs[name]):.2f} | >= {target} ({mark}) |")
    for mode, st in stats.items():
        print(f"\n[bench-pair] mode {mode} interlink counters:\n" +
              "\n".join(f"  {k}: {v.split()}" for k, v in st.items()))
    save_results("pair", {"accel": accel, "modes": MODES, "rounds": ROUNDS, "runtime_s": RUNTIME}, rows, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
