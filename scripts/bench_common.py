"""What the bench scripts share: writing the results file."""
import json
import time

import vm
from conftest import build_trio


def save_results(tag: str, meta: dict, rows: list[dict], t0: float) -> None:
    """Writes bench/results-<tag>.json (meta, date, rows) and says where."""
    dest = vm.REPO / "bench" / f"results-{tag}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps({**meta, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "jobs": rows}, indent=1) + "\n")
    print(f"\n[bench-{tag}] done in {time.time() - t0:.0f}s; results in {dest}")


def splats(bed: vm.Bed, tag: str) -> bool:
    """Prints the kernel splats any guest of `bed` printed; True if any."""
    problems = [s for g in bed.guests.values() if g.alive() for s in vm.splats(g.new_console())]
    if problems:
        print(f"[bench-{tag}] kernel splat:\n" + "\n".join(problems))
    return bool(problems)


def trio_bed(tag: str) -> tuple[vm.Bed, str]:
    """The three-guest bed (not started) with its logs under
    tests/out/bench-<tag>-<time>, and the accelerator to start it with."""
    bed = vm.Bed(vm.REPO / "tests" / "out" / (f"bench-{tag}-" + time.strftime("%Y%m%d-%H%M%S")))
    build_trio(bed)
    return bed, vm.probe_accel()
