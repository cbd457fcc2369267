#!/usr/bin/env python3
"""make soak DURATION=30m [MODE=2]: mixed IO with periodic failovers and
link flaps for the given time (issue 8), then a summary.

Node A and node B export one LUN (MODE 0 Active/Standby or 2 proxy), the
initiator reaches it through both nodes with dm-multipath (ALUA grouped).
Each cycle runs one fio job with crc32c verification (mixed 4k/64k/1M,
writes then verified reads) on the multipath device and, while it runs,
one event, alternating: a planned role switch (the secondary promoted, the
old primary demoted) or a link flap (the listening node's `ha_peer`
cleared, then set again; the link must come back). After the last cycle
the guests' consoles are searched for kernel splats.

Prints one line per cycle and a summary (cycles, failovers, flaps, IO
errors, verify errors, splats). Exits non-zero when fio reported an error,
a verification failed, the link did not come back, or a splat was seen."""
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vm  # noqa: E402
from bench_common import splats, trio_bed  # noqa: E402
from hapair import Pair, fio_running, held, map_ios, setattr_, start_fio, switch_roles, wait_paths  # noqa: E402
from test_ha_alua import link  # noqa: E402


def seconds(text: str) -> int:
    """'90', '90s', '30m', '2h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", text)
    if not m:
        raise SystemExit(f"soak: DURATION={text!r}: expected a number with s, m or h")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def fio_outcome(ini: vm.Guest, timeout: float = 900) -> tuple[bool, str, int, int]:
    """Waits for the cycle's fio: (ok, why, writes, reads)."""
    r = ini.run(f"for i in $(seq {int(timeout * 5)}); do test -e /tmp/fio.rc && exit 0; sleep 0.2; done; "
                "exit 1", timeout=timeout + 30, check=False)
    if r.rc != 0:
        return False, f"fio still running after {timeout:.0f}s", 0, 0
    rc = ini.run("cat /tmp/fio.rc").out.strip()
    out = ini.run("cat /tmp/fio.json /tmp/fio.err").out
    try:
        job = json.loads(out[out.index("{"):out.rindex("}") + 1])["jobs"][0]
    except ValueError:
        return False, f"fio rc {rc}, no JSON: {out[-500:]}", 0, 0
    w, rd = job["write"]["total_ios"], job["read"]["total_ios"]
    if rc != "0" or job["error"] != 0:
        why = "verify" if "verify" in out.lower() else "io"
        return False, f"{why} error (fio rc {rc}, error {job['error']}): {out[-800:]}", w, rd
    return True, "", w, rd


def main() -> int:
    duration = seconds(os.environ.get("DURATION", "10m"))
    mode = int(os.environ.get("MODE", "2"))
    if mode not in (0, 2):
        raise SystemExit(f"soak: MODE={mode}: 0 (Active/Standby) or 2 (proxy)")
    t0 = time.time()
    bed, accel = trio_bed("soak")
    print(f"[soak] {duration}s in mode {mode} ({accel}): fio with verification, a role switch or a link "
          f"flap per cycle", flush=True)
    counts = {"cycles": 0, "events_under_io": 0, "failovers": 0, "flaps": 0, "io_errors": 0, "verify_errors": 0,
              "link_failures": 0, "splats": 0}
    failures: list[str] = []
    try:
        bed.start(accel, leak_baseline=False)
        p = Pair(bed.guests["nodea"], bed.guests["nodeb"], bed.guests["initiator"], mode=mode)
        p.up()
        ini = p.ini
        prim, sec = p.a, p.b
        start = time.time()
        while time.time() - start < duration:
            n = counts["cycles"] + 1
            # 24 MiB at 400 writes/s: the job spans the event.
            start_fio(ini, p.mpath, 24)
            # Let the job get going before the event: IO completes on the map.
            io0, t_go = map_ios(ini, p.mpath), time.time()
            while map_ios(ini, p.mpath) < io0 + 200 and time.time() - t_go < 60:
                time.sleep(0.2)
            under_io = fio_running(ini)
            if under_io:
                counts["events_under_io"] += 1
            t_ev = time.time()
            if n % 2:
                event = f"switch {prim.name} -> {sec.name}"
                switch_roles(prim, sec)
                prim, sec = sec, prim
                counts["failovers"] += 1
            else:
                event = "link flap"
                setattr_(p.a, "ha_peer", "")
                time.sleep(1)
                try:
                    link(p.a, p.b)
                except AssertionError as e:
                    counts["link_failures"] += 1
                    failures.append(f"cycle {n}: the link did not come back: {e}")
                counts["flaps"] += 1
            ev_s = time.time() - t_ev
            was_running = fio_running(ini)
            ok, why, w, rd = fio_outcome(ini)
            counts["cycles"] = n
            if not ok:
                counts["verify_errors" if why.startswith("verify") else "io_errors"] += 1
                failures.append(f"cycle {n} ({event}): {why}")
            if not held(prim):
                failures.append(f"cycle {n}: the primary {prim.name} does not hold the device")
            print(f"[soak] {time.time() - t0:7.0f}s cycle {n:3} {event:22} in {ev_s:5.2f}s "
                  f"(fio {'running' if under_io else 'NOT running'} at the event start, "
                  f"{'running' if was_running else 'done'} at its end); fio {w} writes, "
                  f"{rd} verified reads: {'ok' if ok else 'FAILED'}", flush=True)
        standby = ("ready", 10) if mode == 2 else ("ghost", 1)
        wait_paths(ini, {p.devs[prim.name]: ("ready", 50), p.devs[sec.name]: standby}, timeout=120)
        p.down(accel)
        if splats(bed, "soak"):
            counts["splats"] += 1
            failures.append("kernel splat (above)")
    finally:
        bed.stop()
    print(f"\n[soak] summary after {time.time() - t0:.0f}s (mode {mode}): " +
          ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    for f in failures:
        print(f"[soak] FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
