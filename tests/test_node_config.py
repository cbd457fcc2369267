"""The node's HA settings in /sys/kernel/config/tcm_ha/ (issue 4,
requirement 1): defaults, validation with an errno and a dmesg line naming
attribute and value, -EBUSY for ha_id/ha_mode while devices are enabled,
the write-only key, and the node role and ha_id reaching ALUA."""
import re

import pytest

import lio
import vm
from test_scsi import sg_of, ua_count

NODE = "/sys/kernel/config/tcm_ha"


@pytest.fixture
def tcm_ha(node):
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    try:
        yield node
    finally:
        lio.clear_loopback(node)
        lio.clear_ha(node)
        node.run("rmmod tcm_loop 2>/dev/null; rmmod tcm_ha")


def attr(g, name):
    return g.run(f"cat {NODE}/{name}").out


def write(g, name, value):
    """Writes value; returns (exit status, stderr of the shell's echo)."""
    r = g.run(f"echo {vm.q(value)} > {NODE}/{name}", check=False)
    return r.rc, r.err


def test_defaults(tcm_ha):
    g = tcm_ha
    assert attr(g, "ha_id") == "0\n"
    assert attr(g, "ha_mode") == "0\n"
    assert attr(g, "ha_peer") == "\n"
    assert attr(g, "ha_role") == "primary\n"
    assert attr(g, "ha_key") == "(not set)\n"
    assert attr(g, "ha_link") == "offline\n"
    assert attr(g, "failover") == "manual\n"
    assert attr(g, "stats").startswith("devices: 0\n")


@pytest.mark.parametrize("name,value,expected", [
    ("ha_id", "3", "ha_id: bad value '3': expected 0, 1 or 2"),
    ("ha_mode", "proxy", "ha_mode: bad value 'proxy'"),
    ("ha_role", "master", "ha_role: bad value 'master': expected primary or secondary"),
    ("ha_peer", "dial 192.0.2.2:7777", "ha_peer: bad value 'dial 192.0.2.2:7777'"),
    ("ha_peer", "connect 192.0.2.2:0", "ha_peer: bad value 'connect 192.0.2.2:0'"),
    ("ha_peer", "connect 2001:db8::2:7777", "ha_peer: bad value"),
    ("failover", "yes", "failover: bad value 'yes': expected manual or auto"),
])
def test_bad_values_are_refused(tcm_ha, name, value, expected):
    g = tcm_ha
    before = attr(g, name)
    rc, err = write(g, name, value)
    assert rc != 0 and "Invalid argument" in err, err
    assert f"tcm_ha: {expected}" in g.run("dmesg").out
    assert attr(g, name) == before


def test_good_values(tcm_ha):
    g = tcm_ha
    for name, value in [("ha_id", "2"), ("ha_mode", "2"), ("ha_role", "secondary"), ("failover", "auto"),
                        ("ha_peer", "listen 0.0.0.0:7777"), ("ha_peer", "connect [2001:db8::2]:7777")]:
        assert write(g, name, value)[0] == 0
        assert attr(g, name) == value + "\n"
    # A peer but no key (and not loopback): the link refuses to start.
    link = attr(g, "ha_link")
    assert link.startswith("connecting\n") and "no ha_key configured" in link, link
    assert write(g, "ha_peer", "")[0] == 0 and attr(g, "ha_link") == "offline\n"
    assert "ha_peer cleared" in g.run("dmesg").out
    assert "failover=auto: a secondary makes itself primary" in g.run("dmesg").out
    for name, value in [("ha_id", "0"), ("ha_mode", "0"), ("ha_role", "primary"), ("failover", "manual")]:
        assert write(g, name, value)[0] == 0


def test_key_is_write_only_and_never_logged(tcm_ha):
    g = tcm_ha
    rc, err = write(g, "ha_key", "tooshort-secret")
    assert rc != 0 and "Invalid argument" in err
    log = g.run("dmesg").out
    assert "ha_key: bad value '(hidden)'" in log and "tooshort-secret" not in log
    assert write(g, "ha_key", "a-long-enough-pre-shared-key")[0] == 0
    assert attr(g, "ha_key") == "(set)\n"
    assert "pre-shared" not in g.run(f"cat {NODE}/*; dmesg").out
    assert write(g, "ha_key", "")[0] == 0 and attr(g, "ha_key") == "(not set)\n"


def test_id_and_mode_are_busy_while_devices_are_enabled(tcm_ha):
    g = tcm_ha
    d = lio.create_ha(g)
    assert attr(g, "stats").startswith("devices: 1\n")
    for name in ("ha_id", "ha_mode"):
        rc, err = write(g, name, "1")
        assert rc != 0 and "busy" in err.lower(), err
        assert f"tcm_ha: {name}: cannot change while 1 ha device(s) are enabled" in g.run("dmesg").out
    # Writing the current value is not a change.
    assert write(g, "ha_id", "0")[0] == 0
    lio.clear_ha(g)
    assert attr(g, "stats").startswith("devices: 0\n")
    assert write(g, "ha_id", "1")[0] == 0
    assert write(g, "ha_id", "0")[0] == 0


def test_node_role_and_id_reach_alua(tcm_ha):
    g = tcm_ha
    assert write(g, "ha_id", "2")[0] == 0
    try:
        d = lio.create_ha(g, serial="0f0e0d0c-0b0a-4908-8706-050403020100")
        sd = sg_of(g, lio.loopback_lun(g, d, "5001405000000c00", "5001405000000c01", rtpi=5))
        di = g.run(f"sg_vpd -p 0x83 {sd}").out
        assert "Target port group: 0x3" in di, di  # node 2's group (CTL: 2 + ha_id - 1)
        uas = ua_count(g, sd)
        assert write(g, "ha_role", "secondary")[0] == 0
        # The role change is an access state change: the nexus hears of it.
        r = g.run(f"sg_raw {sd} 00 00 00 00 00 00 2>&1", check=False)
        assert r.rc != 0 and ua_count(g, sd) == uas + 1, r
        r = g.run(f"sg_raw -r 512 {sd} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False)
        assert r.rc != 0 and "unavailable state" in r.out, r
        rtpg = g.run(f"sg_rtpg -d {sd}").out
        # A pair member reports both groups: its own (0x3, unavailable) and
        # the peer's (0x2, active/optimized as far as it knows).
        assert re.search(r"target port group id : 0x3.*?\n.*?unavailable", rtpg, re.S), rtpg
        assert "target port group id : 0x2" in rtpg, rtpg
        # A LUN's own ha_role overrides the node's.
        g.run(f"echo -n ha_role=primary > {d}/control")
        r = g.run(f"sg_raw {sd} 00 00 00 00 00 00 2>&1", check=False)
        assert r.rc == 0 and ua_count(g, sd) == uas + 2, r
        assert g.run(f"sg_raw -r 512 {sd} 28 00 00 00 00 00 00 00 01 00 2>&1", check=False).rc == 0
        assert write(g, "ha_role", "primary")[0] == 0
    finally:
        lio.clear_loopback(g)
        lio.clear_ha(g)
        write(g, "ha_role", "primary")
        write(g, "ha_id", "0")
