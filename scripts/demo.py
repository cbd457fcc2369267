#!/usr/bin/env python3
"""make demo: boots node A and node B, loads tcm_ha on both and shows its state.

Today the module is a skeleton; this demo grows into the full failover demo as
the HA issues land.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vm  # noqa: E402


def main() -> int:
    t0 = time.time()
    out = vm.REPO / "tests" / "out" / ("demo-" + time.strftime("%Y%m%d-%H%M%S"))
    accel = vm.probe_accel()
    bed = vm.Bed(out)
    a, b = bed.guest("nodea"), bed.guest("nodeb")
    bed.link(a, "192.0.2.1/24", b, "192.0.2.2/24")
    print(f"[demo] booting node A and node B ({accel}); logs in {out}")
    try:
        boot = bed.start(accel)
        print("[demo] booted: " + ", ".join(f"{k} {v:.1f}s" for k, v in boot.items()))
        for g in (a, b):
            vm.load_tcm_ha(g)
        a.run("ping -c 1 -W 5 192.0.2.2")
        print("[demo] interlink A<->B: reachable")
        for g in (a, b):
            print(f"\n===== {g.name} =====")
            print(g.run("uname -r; dmesg | grep 'tcm_ha:'; lsmod | grep -E '^(tcm_ha|target_core_mod) '; "
                        "echo version: $(cat /sys/module/tcm_ha/version); "
                        "echo refcnt: $(cat /sys/module/tcm_ha/refcnt)").out.rstrip())
        for g in (a, b):
            g.run("rmmod tcm_ha")
        problems = [s for g in (a, b) for s in vm.splats(g.new_console())]
        if problems:
            print("\n[demo] kernel splat:\n" + "\n".join(problems))
            return 1
        print(f"\n[demo] done in {time.time() - t0:.0f}s: module loaded and unloaded on both nodes, no splat")
        return 0
    finally:
        bed.stop()


if __name__ == "__main__":
    sys.exit(main())
