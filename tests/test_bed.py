"""The test bed itself: links, isolation, and that splat detection works."""
import vm
from conftest import (INTERLINK_A, INTERLINK_B, PATH_A, PATH_A_INI, PATH_B, PATH_B_INI, TRIO_A_CHECKS,
                      TRIO_B_CHECKS)


def test_interlink_reachable(trio):
    a, b = trio.guests["nodea"], trio.guests["nodeb"]
    a.run(f"ping -c 3 -W 5 {INTERLINK_B}")
    b.run(f"ping -c 3 -W 5 {INTERLINK_A}")


def test_paths_reachable_and_isolated(trio):
    i = trio.guests["initiator"]
    i.run(f"ping -c 2 -W 5 {PATH_A}")
    i.run(f"ping -c 2 -W 5 {PATH_B}")
    # The initiator has no route to the interlink segment.
    assert i.run(f"ping -c 1 -W 2 {INTERLINK_A}", check=False).rc != 0
    a = trio.guests["nodea"]
    assert a.run(f"ping -c 1 -W 2 {PATH_B_INI}", check=False).rc != 0


def test_agent_reports_exit_status_and_output(trio):
    a = trio.guests["nodea"]
    r = a.run("echo out; echo err >&2; exit 7", check=False)
    assert (r.rc, r.out, r.err) == (7, "out\n", "err\n")
    assert a.run("hostname").out.strip() == "nodea"
    assert "nodeb" in trio.guests["nodeb"].run("cat /etc/iscsi/initiatorname.iscsi").out
    # Longer than one virtio-serial write (32 KiB): the reply arrives whole.
    big = a.run("head -c 300000 /dev/zero | tr '\\0' x; echo; echo end").out
    assert big == "x" * 300000 + "\nend\n"


def test_debug_checks_as_configured(trio):
    """Each guest runs kmemleak (its leak scans are real) and lockdep's
    proving as conftest asks (TRIO_A_CHECKS, TRIO_B_CHECKS); the
    initiator runs neither (boot parameters of the same kernel)."""
    for g in trio.guests.values():
        # kmemleak refuses any command once disabled (EPERM); enabled, it
        # refuses an unknown one (EINVAL) without scanning.
        r = g.run("(echo probe > /sys/kernel/debug/kmemleak) 2>&1; "
                  "cat /sys/module/lockdep/parameters/prove_locking", check=False)
        lines = r.out.strip().splitlines()
        leak = {"Invalid argument": True, "Operation not permitted": False}
        kmemleak = [v for k, v in leak.items() if k in r.out]
        assert len(kmemleak) == 1 and lines, (g.name, r.out)
        assert (kmemleak[0], lines[-1] != "0") == (g.kmemleak, g.lockdep), (g.name, r.out)
    want = {"nodea": TRIO_A_CHECKS, "nodeb": TRIO_B_CHECKS, "initiator": (False, False)}
    assert {n: (g.kmemleak, g.lockdep) for n, g in trio.guests.items()} == want


def test_splat_detection_sees_a_warning():
    text = ("[   12.3] ------------[ cut here ]------------\n"
            "[   12.3] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 f+0x1/0x2\n")
    assert vm.splats(text)
    assert not vm.splats("[    1.0] tcm_ha: version 0.1.0 loaded\n")
