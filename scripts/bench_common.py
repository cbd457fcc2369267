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
    return _fio_result(g.run(_fio_cmd(dev, args, size, runtime), timeout=600).out, metric)


def _fio_cmd(dev: str, args: str, size: str, runtime: int) -> str:
    return (f"fio --name=b --filename={dev} --direct=1 --ioengine=libaio {args} --size={size} "
            f"--time_based --runtime={runtime} --ramp_time=2 --output-format=json")


# Settings of a SCSI disk's queue that change how the initiator's block
# layer treats its IO (bench-local prints those that differ between the
# two backends' disks).
QUEUE_SETTINGS = ("rotational", "scheduler", "wbt_lat_usec", "write_cache", "fua", "add_random",
                  "nr_requests", "max_sectors_kb", "nomerges", "rq_affinity", "iostats")


def queue_settings(g: vm.Guest, disk: str) -> dict[str, str]:
    """The block-layer settings of `disk` (/dev/sdX) and its SCSI queue depth."""
    name = disk.rsplit("/", 1)[1]
    r = g.run("; ".join(f"echo {k}=$(cat /sys/block/{name}/queue/{k} 2>/dev/null)" for k in QUEUE_SETTINGS)
              + f"; echo queue_depth=$(cat /sys/block/{name}/device/queue_depth)")
    return dict(line.split("=", 1) for line in r.out.splitlines() if "=" in line)


# Fields of /sys/block/<dev>/stat that the probe reports per IO.
_STAT = {"reads": 0, "writes": 4, "write_sectors": 6, "discards": 11, "flushes": 15}


def _counters(text: str) -> dict[str, list[int]]:
    devs = {}
    for line in text.strip().splitlines():
        name, _, rest = line.partition(":")
        devs[name] = [int(x) for x in rest.split()]
    return devs


def fio_probed(g: vm.Guest, dev: str, backing: str, args: str, metric: str, size: str,
               runtime: int) -> tuple[float, float, float, dict[str, float]]:
    """As `fio`, and per IO of the SCSI disk `dev` the reads, writes,
    sectors written, discards and flushes the backing device `backing`
    (/dev/vdX) saw."""
    devs = [d.rsplit("/", 1)[1] for d in (dev, backing)]
    snap = "; ".join(f"echo {d}: $(cat /sys/block/{d}/stat)" for d in devs)
    r = g.run(f"B=$({snap}); {_fio_cmd(dev, args, size, runtime)} >/tmp/fio.json; E=$({snap}); cat /tmp/fio.json; echo '@@probe'; echo \"$B\"; echo '@@'; echo \"$E\"",
              timeout=600)
    out, _, probe = r.out.partition("@@probe")
    rate, p50, p99 = _fio_result(out, metric)
    before, _, after = probe.partition("@@")
    d0, d1 = _counters(before), _counters(after)
    delta = {d: [b - a for a, b in zip(d0[d], d1[d])] for d in devs}
    ios = delta[devs[0]][0] + delta[devs[0]][4] or 1
    return rate, p50, p99, {f"backing_{k}_per_io": delta[devs[1]][i] / ios if i < len(delta[devs[1]]) else 0.0
                            for k, i in _STAT.items()}


def _fio_result(out: str, metric: str) -> tuple[float, float, float]:
    job = json.loads(out[out.index("{"):])["jobs"][0]
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
