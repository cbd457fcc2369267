"""pytest fixtures for the tcm_ha VM test bed.

Fixtures boot guests once per test module; every test is followed by a splat
check on every running guest (console and dmesg), the last test of each
module also by a kmemleak scan (two scans cost seconds per guest under TCG;
a leak is then reported at the end of the module that made it), and the
guests' kernel logs are kept under tests/out/<run>/<test>/.
"""
from __future__ import annotations


import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import vm

RUN = time.strftime("%Y%m%d-%H%M%S")
OUT = vm.REPO / "tests" / "out" / RUN
_live: list[vm.Bed] = []


@pytest.fixture(scope="session")
def accel() -> str:
    a = vm.probe_accel()
    print(f"\n[tcm_ha] accelerator: {a}")
    return a


def _bed(request, accel: str, build, name: str = "session") -> vm.Bed:
    bed = vm.Bed(OUT / name)
    build(bed)
    _live.append(bed)
    try:
        t = bed.start(accel)
        print(f"\n[tcm_ha] booted {', '.join(f'{k} in {v:.1f}s' for k, v in t.items())}")
    except Exception:
        bed.stop()
        _live.remove(bed)
        raise
    return bed


# Addresses of the three links (documentation ranges, never routed anywhere):
# interlink A<->B, iSCSI path I<->A, iSCSI path I<->B.
INTERLINK_A, INTERLINK_B = "192.0.2.1", "192.0.2.2"
PATH_A, PATH_A_INI = "198.51.100.1", "198.51.100.100"
PATH_B, PATH_B_INI = "203.0.113.2", "203.0.113.100"


def build_trio(bed: vm.Bed, disk_mb: int = 256, a_checks: tuple[bool, bool] = (True, True),
               b_checks: tuple[bool, bool] = (True, True)) -> None:
    """The three guests and their links. Nodes A and B boot with the
    kernel checks `(kmemleak, lockdep proving)` asked for each (the
    benchmarks turn them off, as a production kernel runs; see `trio` for
    the tests); the initiator, which runs none of tcm_ha's code, never has
    them."""
    a = bed.guest("nodea", kmemleak=a_checks[0], lockdep=a_checks[1])
    b = bed.guest("nodeb", kmemleak=b_checks[0], lockdep=b_checks[1])
    i = bed.guest("initiator", mem_mb=768, kmemleak=False, lockdep=False)
    bed.link(a, f"{INTERLINK_A}/24", b, f"{INTERLINK_B}/24")
    bed.link(i, f"{PATH_A_INI}/24", a, f"{PATH_A}/24")
    bed.link(i, f"{PATH_B_INI}/24", b, f"{PATH_B}/24")
    a.add_disk(disk_mb)
    b.add_disk(disk_mb)
    bed.shared_disk(disk_mb, a, b)


# Tests that make check leaves to make check-full, for CI's time (the list
# is in Documentation/testing.rst, "Running").
full_only = pytest.mark.skipif(not vm.FULL, reason="make check-full (CI time)")


# Modules after which the single node had to be booted afresh (in the summary).
_reboots: list[str] = []
# Succeeds when no LIO object is left: no backstore HBA (core/ has only
# alua/), no fabric target (naa., iqn. names), and tcm_ha is not loaded.
_CLEAN = ("test ! -d /sys/module/tcm_ha && "
          "test -z \"$(ls /sys/kernel/config/target/core 2>/dev/null | grep -vx alua)\" && "
          "test -z \"$(ls -d /sys/kernel/config/target/*/naa.* /sys/kernel/config/target/*/iqn.* 2>/dev/null)\"")


def _single_bed(request, accel, checks: bool):
    name = "single" if checks else "single-fast"
    bed = _bed(request, accel, lambda b: b.guest("nodea", kmemleak=checks, lockdep=checks).add_disk(256),
               name=name)
    yield bed
    bed.stop()
    if bed in _live:
        _live.remove(bed)


@pytest.fixture(scope="session")
def _single(request, accel):
    """The single-node bed with the kernel's debug checks (kmemleak and
    lockdep's proving), shared by every module that uses `node` and does
    not set NODE_CHECKS = False (one boot instead of one per module)."""
    yield from _single_bed(request, accel, True)


@pytest.fixture(scope="session")
def _single_fast(request, accel):
    """The single-node bed without them, for the modules that set
    NODE_CHECKS = False (make check only; check-full runs every module on
    the checked node). Under TCG kmemleak makes a guest 4 to 5 times
    slower (a single guest measured 157 against 796 4k IOPS, 200 forks in
    42 s against 11 s), and those modules' time is spent in userspace
    tools (targetcli-ha's Python, sg3_utils, libiscsi), not in tcm_ha."""
    yield from _single_bed(request, accel, False)


def _node_checks(module) -> bool:
    return vm.FULL or getattr(module, "NODE_CHECKS", True)


@pytest.fixture(scope="module")
def node(request, accel):
    """One target node with a 256 MiB scratch disk (/dev/vdb), shared with the
    other single-node modules of its kind (see _single, _single_fast).
    After each module it must be as booted: no tcm_ha loaded, no target
    configuration left; otherwise (or if the guest died) it is booted
    afresh, so a module never sees another's leftovers."""
    bed = request.getfixturevalue("_single" if _node_checks(request.module) else "_single_fast")
    g = bed.guests["nodea"]
    yield g
    clean = False
    if g.alive():
        try:
            g.run("rmmod tcm_ha 2>/dev/null; true", timeout=120, check=False)
            clean = g.run(_CLEAN, check=False).rc == 0
        except vm.GuestError:
            clean = False
    if not clean:
        _reboots.append(request.module.__name__)
        bed.stop()
        bed.start(accel)


_trio: list[vm.Bed] = []
_last_trio_test: list[str] = []
# The last test of each module (after reordering): kmemleak scans run there.
_module_last: set[str] = set()


# The three-guest bed's kernel checks, (kmemleak, lockdep proving) per node.
# make check-full runs both on both nodes. make check runs lockdep's proving
# on node A and neither on B: under TCG kmemleak makes a guest 4 to 5 times
# slower (see _single_fast; with it on A, A's CPU was the whole run's
# bottleneck and make check took about 90 minutes), lockdep's proving
# about 2 times. A plays every role in the suite (primary, secondary after
# the role switches, listener). make check's leak scans run on the single
# node (backstore, data path, module and node configuration); check-full
# scans both nodes after every module.
TRIO_A_CHECKS = (vm.FULL, True)
TRIO_B_CHECKS = (vm.FULL, vm.FULL)


@pytest.fixture(scope="session")
def trio(request, accel):
    """Node A, node B (256 MiB /dev/vdb each, and one 256 MiB image both
    see as /dev/vdc) and an initiator, linked. The kernel checks, which
    cost most of a guest's CPU under TCG (see TRIO_A_CHECKS), are kept
    where CI's time allows. Stopped right after the last test that uses it
    (see below)."""
    bed = _bed(request, accel, lambda b: build_trio(b, a_checks=TRIO_A_CHECKS, b_checks=TRIO_B_CHECKS))
    _trio.append(bed)
    yield bed
    _stop_trio()


def _stop_trio() -> None:
    for bed in _trio:
        bed.stop()
        if bed in _live:
            _live.remove(bed)
    _trio.clear()


def pytest_collection_modifyitems(session, config, items):
    """Runs the modules that use the three-guest bed first (each module kept
    whole, in its order) and remembers their last test: the bed is stopped
    after it, so the single-node modules neither share the two cores with
    three idle guests nor wait for their kmemleak scans after every test."""
    modules: dict[str, list] = {}
    for it in items:
        modules.setdefault(it.nodeid.split("::")[0], []).append(it)
    uses = {m: any("trio" in it.fixturenames for it in its) for m, its in modules.items()}
    # Single-node modules on the checked node first, then the others.
    single = sorted((m for m in modules if not uses[m]), key=lambda m: not _node_checks(modules[m][0].module))
    items[:] = [it for m, its in modules.items() if uses[m] for it in its] + \
               [it for m in single for it in modules[m]]
    trio_tests = [it.nodeid for it in items if "trio" in it.fixturenames]
    _last_trio_test[:] = trio_tests[-1:]
    _module_last.clear()
    _module_last.update(its[-1].nodeid for its in modules.values())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if _last_trio_test and item.nodeid == _last_trio_test[0]:
        _stop_trio()


def _check_guest(g: vm.Guest, outdir: Path, scan: bool) -> list[str]:
    problems = []
    if not g.alive():
        problems.append(f"{g.name}: QEMU exited during the test:\n{g.console_tail()}")
        return problems
    console = g.new_console()
    dmesg = ""
    leaks = ""
    try:
        dmesg = g.run("dmesg -c", timeout=300, check=False).out
        if scan:
            leaks = g.kmemleak_scan()
            if g.kmemleak:
                g.run("echo clear > /sys/kernel/debug/kmemleak", timeout=300, check=False)
    except vm.GuestError as e:
        problems.append(str(e))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{g.name}-dmesg.txt").write_text(dmesg)
    (outdir / f"{g.name}-console.txt").write_text(console)
    if leaks.strip():
        (outdir / f"{g.name}-kmemleak.txt").write_text(leaks)
        problems.append(f"{g.name}: kmemleak:\n{leaks[:4000]}")
    seen = set()
    for s in vm.splats(console) + vm.splats(dmesg):
        key = s.splitlines()[0] if s else s
        if key not in seen:
            seen.add(key)
            problems.append(f"{g.name}: kernel splat:\n{s}")
    g.mark()
    return problems


@pytest.fixture(autouse=True)
def splat_guard(request):
    """Fails the test if any live guest printed a splat, or at the end of a
    module leaked memory."""
    for bed in _live:
        for g in bed.guests.values():
            g.mark()
    yield
    outdir = OUT / request.node.name
    guests = [g for bed in list(_live) for g in bed.guests.values()]
    problems = []
    if guests:
        with ThreadPoolExecutor(len(guests)) as pool:
            scan = request.node.nodeid in _module_last
            for p in pool.map(lambda g: _check_guest(g, outdir, scan), guests):
                problems += p
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    for bed in list(_live):
        bed.stop()


# Measurements the tests print ("[tag] ..." lines), repeated in the summary so
# a CI log shows them without -s.
_measurements: list[str] = []
# "[tag] text" lines printed by passing tests (not "[   1.23] dmesg").
_MEASUREMENT = re.compile(r"\[[a-z][\w-]*\] ")


# Seconds spent per test module (setup + call + teardown), for CI tuning.
_module_time: dict[str, float] = {}


def pytest_runtest_logreport(report):
    m = report.nodeid.split("::")[0]
    _module_time[m] = _module_time.get(m, 0.0) + report.duration
    if report.when == "call":
        for line in report.capstdout.splitlines():
            if _MEASUREMENT.match(line) and not line.startswith("[tcm_ha]"):
                _measurements.append(f"{line}  ({report.nodeid.split('::')[-1]})")


def pytest_terminal_summary(terminalreporter):
    if _reboots:
        terminalreporter.write_line(f"[tcm_ha] single node left unclean (so rebooted) by: {', '.join(_reboots)}")
    if _module_time:
        terminalreporter.section("time per module")
        for m, t in sorted(_module_time.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{t:7.1f}s  {m}")
    if _measurements:
        terminalreporter.section("measurements")
        for line in _measurements:
            terminalreporter.write_line(line)
