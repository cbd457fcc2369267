"""What the bench scripts share: the fio jobs, a fio run, the trio bed,
the splat check, writing the results file."""
import json
import time

import vm
from conftest import build_trio


# name, fio arguments, metric: the jobs of bench-local and bench-pair.
JOBS = [("4k randread QD1", "--rw=randread --bs=4k --iodepth=1", "iops"),
        ("4k randwrite QD1", "--rw=randwrite --bs=4k --iodepth=1", "iops"),
        ("4k randread QD32", "--rw=randread --bs=4k --iodepth=32", "iops"),
        ("4k randwrite QD32", "--rw=randwrite --bs=4k --iodepth=32", "iops"),
        ("1M seq read", "--rw=read --bs=1M --iodepth=8", "MB/s"),
        ("1M seq write", "--rw=write --bs=1M --iodepth=8", "MB/s")]


def fio(g: vm.Guest, dev: str, args: str, metric: str, size: str, runtime: int) -> tuple[float, float, float]:
    """Runs one fio job on `dev` in `g`: its rate (IOPS or MB/s) and its
    completion latency p50 and p99 in ms."""
    r = g.run(f"fio --name=b --filename={dev} --direct=1 --ioengine=libaio {args} --size={size} "
              f"--time_based --runtime={runtime} --ramp_time=2 --output-format=json", timeout=600)
    job = json.loads(r.out[r.out.index("{"):])["jobs"][0]
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    pct = side["clat_ns"].get("percentile", {})
    p50, p99 = pct.get("50.000000", 0) / 1e6, pct.get("99.000000", 0) / 1e6
    rate = side["iops"] if metric == "iops" else side["bw_bytes"] / 1e6
    return rate, p50, p99


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
    tests/out/bench-<tag>-<time>, and the accelerator to start it with.
    The nodes boot without kmemleak and lockdep's proving (boot
    parameters of the same kernel), as a production kernel runs."""
    bed = vm.Bed(vm.REPO / "tests" / "out" / (f"bench-{tag}-" + time.strftime("%Y%m%d-%H%M%S")))
    build_trio(bed, a_checks=(False, False), b_checks=(False, False))
    return bed, vm.probe_accel()
