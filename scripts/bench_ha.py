#!/usr/bin/env python3
"""make bench-ha: the HA events, timed, REPS times each (default 5), in one
run on the three-guest bed in proxy mode (issue 7):

- planned role switch (alternately A->B and B->A) under a time-based fio
  through the multipath map: the new primary's promotion, and the first IO
  issued after it completing (target 1 s);
- hard stop of the primary (its QEMU is frozen with SIGSTOP: no FIN, no
  Bye): the survivor's dead-peer detection, its promotion and the first IO
  after it (target: IO resumes within 3 s); the frozen node is then thawed
  and demoted, and the pair relinks before the next repetition;
- link-up after ha_peer is set on B (target 1 s);
- a PR REGISTER through A's path seen by READ KEYS through B's path.

Prints min/median/max per measure with its target, writes
bench/results-ha.json. Absolute times under TCG are not meaningful for
production, but the targets are in seconds; they are printed side by side.
Exits non-zero only on an error, not on a missed target."""
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vm  # noqa: E402
from bench_common import save_results, splats, trio_bed  # noqa: E402
from conftest import INTERLINK_A  # noqa: E402
from hapair import NODE, Pair, map_ios, setattr_, switch_roles, wait_map_ios, wait_paths  # noqa: E402
from test_interlink import PORT, wait_state  # noqa: E402

REPS = int(os.environ.get("REPS", "5"))
FIO = ("fio --name=bg --filename={dev} --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bs=4k "
       "--size=64M --time_based --runtime=3600")


def log(msg: str) -> None:
    print(f"[bench-ha] {msg}", flush=True)


def start_bg_fio(ini: vm.Guest, dev: str) -> None:
    ini.run(f"setsid sh -c '{FIO.format(dev=dev)} > /dev/null 2>&1' < /dev/null > /dev/null 2>&1 &")
    ini.run("for i in $(seq 100); do pgrep -x fio >/dev/null && exit 0; sleep 0.1; done; exit 1")


def guest_ms(g: vm.Guest, loop: str, timeout: float = 60) -> float:
    """Runs `loop` (a shell condition polled every 10 ms in the guest) and
    returns the milliseconds until it held, measured in the guest."""
    r = g.run(f"t0=$(date +%s%N); for i in $(seq {int(timeout * 100)}); do if {loop}; then "
              f"echo $(( ($(date +%s%N) - t0) / 1000000 )); exit 0; fi; sleep 0.01; done; exit 1",
              timeout=timeout + 30)
    return int(r.out.strip().splitlines()[-1])


def planned_switch(p: Pair, old: vm.Guest, new: vm.Guest) -> dict:
    t0 = time.time()
    promoted = switch_roles(old, new)
    io0 = map_ios(p.ini, p.mpath)
    wait_map_ios(p.ini, p.mpath, io0)
    return {"promoted": promoted, "io_resumed": time.time() - t0}


def hard_stop(p: Pair, victim: vm.Guest, survivor: vm.Guest) -> dict:
    t0 = time.time()
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        survivor.run(f"for i in $(seq 500); do test \"$(head -n1 {NODE}/ha_link)\" != online && exit 0; "
                     "sleep 0.02; done; exit 1", timeout=60)
        detected = time.time() - t0
        setattr_(survivor, "ha_role", "primary")
        promoted = time.time() - t0
        io0 = map_ios(p.ini, p.mpath)
        wait_map_ios(p.ini, p.mpath, io0)
        resumed = time.time() - t0
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    # The thawed node still believes it is primary: demote it (a cluster
    # manager's fencing would have); the pair relinks.
    setattr_(victim, "ha_role", "secondary")
    wait_state(victim, "online", timeout=60)
    wait_state(survivor, "online", timeout=60)
    return {"detected": detected, "promoted": promoted, "io_resumed": resumed}


def link_up(b: vm.Guest) -> float:
    setattr_(b, "ha_peer", "")
    wait_state(b, "offline")
    t0 = time.time()
    setattr_(b, "ha_peer", f"connect {INTERLINK_A}:{PORT}")
    wait_state(b, "online")
    return time.time() - t0


def pr_seen(p: Pair, key: int) -> float:
    da, db = p.devs["nodea"], p.devs["nodeb"]
    p.ini.run(f"sg_persist -n --out --register --param-sark={key:#x} /dev/{da}")
    try:
        ms = guest_ms(p.ini, f"sg_persist -n --in -k /dev/{db} | grep -q {key:#x}", timeout=30)
    finally:
        p.ini.run(f"sg_persist -n --out --register --param-rk={key:#x} --param-sark=0 /dev/{da}", check=False)
    return ms / 1000


def summary(name: str, values: list[float], target: float | None) -> dict:
    row = {"measure": name, "seconds": values, "min": min(values), "median": statistics.median(values),
           "max": max(values), "target_s": target}
    mark = "" if target is None else f" | <= {target} ({'met' if row['median'] <= target else 'MISSED'})"
    print(f"| {name} | {row['min']:.2f} | {row['median']:.2f} | {row['max']:.2f}{mark or ' | -'} |")
    return row


def main() -> int:
    t0 = time.time()
    bed, accel = trio_bed("ha")
    log(f"booting node A, node B and the initiator ({accel}); {REPS} repetitions per event, mode 2")
    got: dict[str, list[float]] = {k: [] for k in (
        "switch: new primary", "switch: IO resumed", "hard stop: death seen", "hard stop: new primary",
        "hard stop: IO resumed", "link up after ha_peer set", "PR REGISTER seen through the peer")}
    try:
        bed.start(accel, leak_baseline=False)
        p = Pair(bed.guests["nodea"], bed.guests["nodeb"], bed.guests["initiator"], mode=2)
        p.up()
        a, b, ini = p.a, p.b, p.ini
        wait_paths(ini, {p.devs["nodea"]: ("ready", 50), p.devs["nodeb"]: ("ready", 10)})
        for i in range(REPS):
            got["link up after ha_peer set"].append(link_up(b))
            got["PR REGISTER seen through the peer"].append(pr_seen(p, 0x1000 + i))
        log("link-up and PR measured; fio in the background for the switches")
        start_bg_fio(ini, p.mpath)
        primary, other = a, b
        for i in range(REPS):
            r = planned_switch(p, primary, other)
            primary, other = other, primary
            got["switch: new primary"].append(r["promoted"])
            got["switch: IO resumed"].append(r["io_resumed"])
            log(f"switch {i + 1}: {r}")
        for i in range(REPS):
            r = hard_stop(p, primary, other)
            primary, other = other, primary
            got["hard stop: death seen"].append(r["detected"])
            got["hard stop: new primary"].append(r["promoted"])
            got["hard stop: IO resumed"].append(r["io_resumed"])
            log(f"hard stop {i + 1}: {r}")
        ini.run("pkill fio; sleep 1", check=False)
        p.down(accel)
        if splats(bed, "ha"):
            return 1
    finally:
        bed.stop()
    targets = {"switch: IO resumed": 1.0, "hard stop: IO resumed": 3.0, "link up after ha_peer set": 1.0}
    print("\n| measure (s) | min | median | max | target |\n|---|---|---|---|---|")
    rows = [summary(k, v, targets.get(k)) for k, v in got.items() if v]
    save_results("ha", {"accel": accel, "mode": 2, "reps": REPS}, rows, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
