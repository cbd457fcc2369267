"""What the `ha` backstore answers itself on one node (issue 3, requirement
5): standard INQUIRY with TPGS, VPD pages, REPORT/SET TARGET PORT GROUPS,
ALUA access-state refusals, and persistent reservations seen from two I_T
nexuses (two tcm_loop targets with their own initiator ports and relative
target ports) with reservation conflicts and PR unit attentions."""
import re

import pytest

import lio
import vm

# make check runs this module on the single node without kmemleak and
# lockdep's proving (conftest._single_fast): its time goes to userspace
# tools; check-full runs it with both.
NODE_CHECKS = False

SERIAL = "6a1e4d52-1c8f-4b1a-9e2b-0123456789ab"
INI_A, INI_B = "5001405000000a01", "5001405000000b01"


@pytest.fixture
def two_paths(node):
    """One `ha` device seen through two tcm_loop nexuses: (node, sdA, sdB, dev)."""
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    try:
        d = lio.create_ha(node, serial=SERIAL)
        a = lio.loopback_lun(node, d, "5001405000000a00", INI_A, rtpi=0x11)
        b = lio.loopback_lun(node, d, "5001405000000b00", INI_B, rtpi=0x12)
        # The tools use the SCSI generic nodes: closing a block device node
        # opened for writing makes udev probe it (blkid READs), which would
        # consume unit attentions meant for the test.
        yield node, sg_of(node, a), sg_of(node, b), d
    finally:
        lio.clear_loopback(node)
        lio.clear_ha(node)
        node.run("rmmod tcm_loop; rmmod tcm_ha")


def sg_of(g: vm.Guest, sd: str) -> str:
    name = g.run(f"ls /sys/block/{sd.rsplit('/', 1)[1]}/device/scsi_generic").out.split()[0]
    return f"/dev/{name}"


def ua_count(g: vm.Guest, sg: str) -> int:
    """How often the initiator's kernel logged ASYMMETRIC ACCESS STATE
    CHANGED for the device of `sg`. scsi_dh_alua takes that unit attention
    itself (it rechecks the port groups and retries the command), so
    user-space tools never see it; the kernel log line is the proof that it
    was delivered."""
    hctl = g.run(f"ls /sys/class/scsi_generic/{sg.rsplit('/', 1)[1]}/device/scsi_device").out.strip()
    return int(g.run(f"dmesg | grep -c '{hctl}: Asymmetric access state changed'", check=False).out.strip() or 0)


def raw(g: vm.Guest, sd: str, cdb: str, extra: str = "") -> vm.Result:
    """sg_raw without failing on a non-GOOD status; .out holds all text."""
    r = g.run(f"sg_raw {extra} {sd} {cdb} 2>&1", check=False)
    return r


def read1(g, sd):
    return raw(g, sd, "28 00 00 00 00 00 00 00 01 00", "-r 512")


def write1(g, sd):
    g.run("test -f /tmp/blk || head -c 512 /dev/urandom > /tmp/blk")
    return raw(g, sd, "2a 00 00 00 00 40 00 00 01 00", "-s 512 -i /tmp/blk")


def rel_ports(g, sd):
    out = g.run(f"sg_vpd -p 0x83 {sd}").out
    return int(re.search(r"Relative target port: 0x([0-9a-f]+)", out).group(1), 16)


def test_standard_inquiry_reports_implicit_alua(two_paths):
    g, a, _, _ = two_paths
    out = g.run(f"sg_inq {a}").out
    assert "TPGS=1" in out and "3PC=1" in out, out
    assert "LIO-ORG" in out and "TCM-HA" in out, out
    hexdump = g.run(f"sg_raw -r 74 {a} 12 00 00 00 4a 00 2>/dev/null | head -1; "
                    f"sg_inq -H {a}").out
    assert "00 00 06 12" in hexdump, hexdump  # qualifier 0, disk, SPC-4, HISUP|fmt 2


def test_vpd_pages(two_paths):
    g, a, b, _ = two_paths
    sp = g.run(f"sg_vpd -p 0x0 {a}").out
    for page in ("Supported VPD pages", "Unit serial number", "Device identification",
                 "Block limits", "Block device characteristics", "Logical block provisioning"):
        assert page in sp, sp
    assert SERIAL in g.run(f"sg_vpd -p 0x80 {a}").out
    di = g.run(f"sg_vpd -p 0x83 {a}").out
    assert "Target port group: 0x1" in di, di
    assert re.search(r"designator type: NAA,.*\n\s+0x6001405", di), di
    assert "naa.5001405000000a00,t,0x0001" in di, di
    # The logical unit designator is the same through both paths, the
    # relative target ports differ.
    naa = lambda sd: re.search(r"designator type: NAA,.*\n\s+(0x6[0-9a-f]{31})",
                               g.run(f"sg_vpd -p 0x83 {sd}").out).group(1)
    assert naa(a) == naa(b)
    assert rel_ports(g, a) != rel_ports(g, b)
    bl = g.run(f"sg_vpd -p 0xb0 {a}").out
    assert "Maximum compare and write length: 1 blocks" in bl, bl
    assert "Maximum unmap LBA count:" in bl, bl
    # Unknown page: ILLEGAL REQUEST, invalid field in CDB.
    r = raw(g, a, "12 01 c7 00 ff 00", "-r 255")
    assert r.rc != 0 and "Invalid field in cdb" in r.out, r


def test_rtpg_lists_both_ports_active_optimized(two_paths):
    g, a, b, _ = two_paths
    ports = sorted({rel_ports(g, a), rel_ports(g, b)})
    for ext in ("", "-e "):
        out = g.run(f"sg_rtpg -d {ext}{a}").out
        assert "target port group id : 0x1" in out, out
        assert "active/optimized" in out, out
        assert "target port count : 02" in out, out
        for p in ports:
            assert f"0x{p:02x}" in out, out
    out = g.run(f"sg_rtpg -e -H {a}").out
    assert re.search(r"^\s*00\s+00 00 00 [0-9a-f]{2} 10 00", out, re.M), out  # format type 1


def test_stpg_is_refused(two_paths):
    g, a, _, _ = two_paths
    g.run("printf '\\0\\0\\0\\0\\x00\\0\\0\\x01' > /tmp/stpg")
    r = raw(g, a, "a4 0a 00 00 00 00 00 00 00 08 00 00", "-s 8 -i /tmp/stpg")
    assert r.rc != 0 and "Illegal Request" in r.out and "Invalid field in cdb" in r.out, r


def test_secondary_without_peer_is_unavailable(two_paths):
    g, a, _, d = two_paths
    uas = ua_count(g, a)
    g.run(f"echo -n ha_role=secondary > {d}/control")
    try:
        # The role change is an access state change: unit attention first.
        r = raw(g, a, "00 00 00 00 00 00")
        assert r.rc != 0 and ua_count(g, a) == uas + 1, (r, uas)
        r = read1(g, a)
        assert r.rc != 0 and "Not Ready" in r.out and "unavailable state" in r.out, r
        r = raw(g, a, "00 00 00 00 00 00")  # TEST UNIT READY is refused too
        assert r.rc != 0 and "unavailable state" in r.out, r
        assert "TPGS=1" in g.run(f"sg_inq {a}").out  # INQUIRY is allowed
        out = g.run(f"sg_rtpg -d {a}").out  # and RTPG
        assert "unavailable" in out, out
    finally:
        g.run(f"echo -n ha_role=primary > {d}/control")
    assert read1(g, a).rc == 0 and ua_count(g, a) == uas + 2


def prout(g, sd, args):
    return g.run(f"sg_persist -n --out {args} {sd} 2>&1", check=False)


def keys(g, sd):
    out = g.run(f"sg_persist -n --in -k {sd}").out
    return re.findall(r"0x([0-9a-f]+)", out.split("registered reservation key", 1)[-1]), out


def test_pr_register_reserve_conflict_release(two_paths):
    g, a, b, _ = two_paths
    assert prout(g, a, "--register --param-sark=0x1111").rc == 0
    assert prout(g, b, "--register --param-sark=0x2222").rc == 0
    ks, out = keys(g, b)
    assert ks == ["1111", "2222"] and "PR generation=0x2" in out, out
    assert prout(g, a, "--reserve --param-rk=0x1111 --prout-type=1").rc == 0
    res = g.run(f"sg_persist -n --in -r {b}").out
    assert "Key=0x1111" in res and "Write Exclusive" in res, res
    # Write Exclusive: the other registrant may read but not write.
    assert read1(g, b).rc == 0
    r = write1(g, b)
    assert r.rc != 0 and "Reservation Conflict" in r.out, r
    assert write1(g, a).rc == 0
    # RELEASE from a registrant that does not hold the reservation is GOOD
    # and changes nothing (SPC-4 5.13.11.2); an unregistered key conflicts.
    assert prout(g, b, "--release --param-rk=0x2222 --prout-type=1").rc == 0
    assert "Key=0x1111" in g.run(f"sg_persist -n --in -r {b}").out
    r = prout(g, b, "--release --param-rk=0x9999 --prout-type=1")
    assert r.rc != 0 and "onflict" in r.out, r
    assert prout(g, a, "--release --param-rk=0x1111 --prout-type=1").rc == 0
    assert write1(g, b).rc == 0
    caps = g.run(f"sg_persist -n --in -c {a}").out
    assert "Compatible Reservation Handling(CRH): 1" in caps, caps
    assert prout(g, a, "--clear --param-rk=0x1111").rc == 0
    assert keys(g, a)[0] == []


def test_pr_read_full_status_names_both_nexuses(two_paths):
    g, a, b, _ = two_paths
    prout(g, a, "--register --param-sark=0xaa")
    prout(g, b, "--register-ignore --param-sark=0xbb")
    prout(g, b, "--reserve --param-rk=0xbb --prout-type=3")
    out = g.run(f"sg_persist -n --in -s {a}").out
    assert f"SAS address: 0x{INI_A}" in out and f"SAS address: 0x{INI_B}" in out, out
    assert f"Relative port address: 0x{rel_ports(g, a):x}" in out, out
    assert f"Relative port address: 0x{rel_ports(g, b):x}" in out, out
    assert "Exclusive Access" in out and "reservation holder" in out.lower(), out
    # Exclusive Access: the other registrant can neither read nor write.
    assert "Reservation Conflict" in read1(g, a).out
    prout(g, b, "--clear --param-rk=0xbb")


def test_pr_preempt_raises_unit_attention(two_paths):
    g, a, b, _ = two_paths
    prout(g, a, "--register --param-sark=0x1")
    prout(g, b, "--register --param-sark=0x2")
    prout(g, a, "--reserve --param-rk=0x1 --prout-type=3")
    assert prout(g, b, "--preempt --param-rk=0x2 --param-sark=0x1 --prout-type=3").rc == 0
    # A's registration was preempted: its next command gets the UA once.
    r = raw(g, a, "00 00 00 00 00 00")
    assert r.rc != 0 and "Unit Attention" in r.out and "Registrations preempted" in r.out, r
    assert raw(g, a, "00 00 00 00 00 00").rc == 0
    assert "Reservation Conflict" in read1(g, a).out
    assert keys(g, b)[0] == ["2"]
    res = g.run(f"sg_persist -n --in -r {b}").out
    assert "Key=0x2" in res and "Exclusive Access" in res, res
    prout(g, b, "--clear --param-rk=0x2")


# (type, registered other may read, may write, unregistered other may read, may write)
TYPES = [(1, True, False, True, False), (3, False, False, False, False),
         (5, True, True, True, False), (6, True, True, False, False),
         (7, True, True, True, False), (8, True, True, False, False)]


# make check: Write Exclusive and Exclusive Access, All Registrants; the host
# tests cover every type, check-full all six here.
@pytest.mark.parametrize("ty,reg_r,reg_w,unreg_r,unreg_w", TYPES if vm.FULL else [TYPES[0], TYPES[5]])
def test_pr_types_enforced(two_paths, ty, reg_r, reg_w, unreg_r, unreg_w):
    g, a, b, _ = two_paths
    assert prout(g, a, "--register --param-sark=0xa").rc == 0
    rk = "0xa"
    assert prout(g, a, f"--reserve --param-rk={rk} --prout-type={ty}").rc == 0
    ok = lambda r: r.rc == 0
    assert ok(read1(g, a)) and ok(write1(g, a))  # the holder always may
    assert (ok(read1(g, b)), ok(write1(g, b))) == (unreg_r, unreg_w)
    assert prout(g, b, "--register --param-sark=0xb").rc == 0
    assert (ok(read1(g, b)), ok(write1(g, b))) == (reg_r, reg_w)
    assert prout(g, a, "--clear --param-rk=0xa").rc == 0
    # CLEAR: every other registrant gets RESERVATIONS PREEMPTED once.
    r = raw(g, b, "00 00 00 00 00 00")
    assert r.rc != 0 and "Reservations preempted" in r.out, r
    assert ok(write1(g, b))
