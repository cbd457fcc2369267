#!/usr/bin/env python3
"""make demo: the whole mission in one command.

Boots node A, node B and an initiator (QEMU, KVM when a probe boot works,
else TCG); loads tcm_ha on both nodes; configures the HA LUN (node settings
through configfs, the backstore with targetcli-ha) on storage both nodes see;
logs the initiator in through both nodes with dm-multipath (ALUA); then, with
fio writing and verifying through the multipath device:
  1. a planned switch of the primary from A to B,
  2. a hard power-off of the primary (B) and the promotion of A, as a
     cluster manager would do it.
Prints the ALUA view and the interlink state along the way and a table of
the times to IO resumption, fio's IO errors and the verification result.

MODE=2 (Active/Active proxy: both nodes serve IO, the secondary hands its
block IO to the primary) is the default; MODE=0 runs Active/Standby. MODE=1
(Active/Active on shared storage) is refused until it lands.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import vm  # noqa: E402
from conftest import build_trio  # noqa: E402
from test_ha_alua import rtpg  # noqa: E402
from hapair import (NODE, Pair, finish_fio, fio_running, link_state, map_ios, setattr_, start_fio,  # noqa: E402
                    switch_roles, wait_map_ios, wait_writes)

# fio's size per event in MiB (written then verified in 4k blocks).
FIO_MIB = int(os.environ.get("FIO_MIB", "8"))

T0 = time.time()


def step(msg: str) -> None:
    print(f"[demo {time.time() - T0:6.1f}s] {msg}", flush=True)


def alua_view(p: Pair) -> None:
    """multipath -ll, the states RTPG reports through each path, and the
    interlink state on each node."""
    print(p.ini.run("multipath -ll").out.rstrip())
    for name, dev in p.devs.items():
        groups = rtpg(p.ini, f"/dev/{dev}")
        print(f"  RTPG through {name}'s path ({dev}): " +
              ", ".join(f"group {g:#x} {s} (ports {', '.join(hex(x) for x in ports) or 'none'})"
                        for g, (s, ports) in sorted(groups.items())))
    for g in (p.a, p.b):
        if g.alive():
            role = g.run(f"cat {NODE}/ha_role").out.strip()
            print(f"  {g.name}: ha_role {role}, interlink {link_state(g)}")


def failover(p: Pair, old: str, new: str, event: str, act) -> dict:
    """Runs fio through the map, does `act` (which returns when the new
    primary is promoted, with the time the peer's death was seen, if that
    applies) once writes flow through `old`'s path, and measures until IO
    issued after the promotion completes through the map (through either
    path); fio must end without error."""
    ini, devs = p.ini, p.devs
    start_fio(ini, p.mpath, FIO_MIB)
    wait_writes(ini, devs[old], 0)
    t0 = time.time()
    detected = act(t0)
    promoted = time.time() - t0
    io0 = map_ios(ini, p.mpath)
    step(f"{new} is primary after {promoted:.2f}s; waiting for IO to complete through the map")
    in_flight = fio_running(ini)
    wait_map_ios(ini, p.mpath, io0)
    resumed = time.time() - t0
    step(f"IO completes again {resumed:.2f}s after the event; letting fio finish and verify")
    return {"event": event, "detected": detected, "promoted": promoted, "resumed": resumed,
            "job": finish_fio(ini), "under_io": in_flight}


def switch(p: Pair) -> dict:
    """Planned switch A -> B under fio."""
    def act(t0: float) -> None:
        switch_roles(p.a, p.b)
    return failover(p, "nodea", "nodeb", "planned switch A->B", act)


def power_off(p: Pair) -> dict:
    """Hard power-off of B (the primary now) under fio, A promoted when it
    has declared B dead."""
    a = p.a

    def act(t0: float) -> float:
        p.b.proc.kill()
        r = a.run(f"for i in $(seq 200); do test \"$(head -n1 {NODE}/ha_link)\" != online && exit 0; "
                  "sleep 0.05; done; exit 1", check=False)
        if r.rc != 0:
            raise RuntimeError(f"A did not notice B's death:\n{a.run(f'cat {NODE}/ha_link; dmesg | tail').out}")
        detected = time.time() - t0
        setattr_(a, "ha_role", "primary")
        return detected
    return failover(p, "nodeb", "nodea", "power-off of B, A promoted", act)


def table(rows: list[dict]) -> str:
    head = ("event", "peer death seen", "new primary", "IO resumed", "fio IO errors", "verify")
    lines = [" | ".join(head), " | ".join("-" * len(h) for h in head)]
    for r in rows:
        job = r["job"]
        verified = f"ok, {job['read']['total_ios']} blocks" if job["error"] == 0 else "FAILED"
        lines.append(" | ".join([
            r["event"], "-" if r["detected"] is None else f"{r['detected']:.2f} s",
            f"{r['promoted']:.2f} s", f"{r['resumed']:.2f} s", str(job["error"]), verified]))
    return "\n".join(lines)


def main() -> int:
    mode = int(os.environ.get("MODE", "2"))
    if mode not in (0, 2):
        print(f"[demo] MODE={mode}: Active/Active on shared storage (mode 1) is not implemented yet; "
              "MODE=2 (proxy, the default) and MODE=0 (Active/Standby) run", file=sys.stderr)
        return 2
    out = vm.REPO / "tests" / "out" / ("demo-" + time.strftime("%Y%m%d-%H%M%S"))
    accel = vm.probe_accel()
    bed = vm.Bed(out)
    build_trio(bed)
    step(f"booting node A, node B and the initiator ({accel}); logs in {out}")
    try:
        boot = bed.start(accel, leak_baseline=False)
        step("booted: " + ", ".join(f"{k} {v:.1f}s" for k, v in boot.items()))
        p = Pair(bed.guests["nodea"], bed.guests["nodeb"], bed.guests["initiator"], mode=mode, targetcli=True)
        p.up()
        step(f"mode {mode}: LUN s0 on shared /dev/vdc, A primary, B secondary, interlink online; "
             f"initiator on {p.mpath} through {p.devs['nodea']} (A) and {p.devs['nodeb']} (B)")
        alua_view(p)
        rows = []
        step("fio (crc32c verify) through the map; switching the primary from A to B")
        rows.append(switch(p))
        alua_view(p)
        step("fio again; powering off B (the primary) without warning")
        rows.append(power_off(p))
        alua_view(p)
        print("\n" + table(rows) + "\n")
        bad = [r["event"] for r in rows if not r["under_io"]]
        if bad:
            step(f"fio finished before the event ({', '.join(bad)}): nothing was tested")
            return 1
        problems = [s for g in bed.guests.values() if g.alive() for s in vm.splats(g.new_console())]
        if problems:
            print("[demo] kernel splat:\n" + "\n".join(problems))
            return 1
        step("done: no IO error, data verified, no kernel splat; shutting down")
        return 0
    except (AssertionError, RuntimeError, vm.GuestError) as e:
        step(f"FAILED: {e}")
        return 1
    finally:
        bed.stop()


if __name__ == "__main__":
    sys.exit(main())
