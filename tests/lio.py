"""Helpers to export LUNs with stock LIO (targetcli) and log in with open-iscsi."""
import vm

TARGET_IQN = "iqn.2026-11.org.tcm-ha:target"


def initiator_iqn(g: vm.Guest) -> str:
    return g.run("sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi").out.strip()


def export_iblock(node: vm.Guest, portal: str, initiators: list[str], serial: str,
                  dev: str = "/dev/vdb", name: str = "disk0") -> None:
    """Exports dev over iSCSI on portal:3260 with an ACL per initiator."""
    tpg = f"/iscsi/{TARGET_IQN}/tpg1"
    cmds = [f"/backstores/block create name={name} dev={dev} wwn={serial}",
            f"/iscsi create {TARGET_IQN}",
            f"{tpg}/portals delete 0.0.0.0 3260",
            f"{tpg}/portals create {portal} 3260",
            f"{tpg}/luns create /backstores/block/{name}"]
    cmds += [f"{tpg}/acls create {iqn}" for iqn in initiators]
    for c in cmds:
        node.run(f"targetcli {c}")


def clear_target(node: vm.Guest) -> None:
    node.run("targetcli clearconfig confirm=True")


def login(ini: vm.Guest, portal: str) -> str:
    """Discovers and logs in to TARGET_IQN at portal; returns the by-path device."""
    ini.run("systemctl start iscsid")
    ini.run(f"iscsiadm -m discovery -t sendtargets -p {portal}")
    ini.run(f"iscsiadm -m node -T {TARGET_IQN} -p {portal} --login")
    path = f"/dev/disk/by-path/ip-{portal}:3260-iscsi-{TARGET_IQN}-lun-0"
    ini.run(f"udevadm settle; for i in $(seq 100); do test -b {path} && exit 0; sleep 0.1; done; "
            f"echo {path} never appeared; exit 1")
    return path


def logout_all(ini: vm.Guest) -> None:
    ini.run("iscsiadm -m node --logoutall=all; iscsiadm -m node -o delete; "
            "iscsiadm -m discoverydb -t sendtargets -o delete", check=False)


def fio_verify(g: vm.Guest, dev: str, size: str = "32M", extra: str = "") -> str:
    """Random writes with crc32c verification; raises on any IO or verify error."""
    r = g.run(f"fio --name=verify --filename={dev} --direct=1 --ioengine=libaio --iodepth=8 "
              f"--rw=randwrite --bs=4k --size={size} --verify=crc32c --do_verify=1 "
              f"--verify_fatal=1 --output-format=terse --terse-version=3 {extra}", timeout=600)
    fields = r.out.strip().splitlines()[-1].split(";")
    # terse v3: field 5 is the error code of the job.
    assert fields[4] == "0", r.out
    return r.out


CORE = "/sys/kernel/config/target/core"
LOOP = "/sys/kernel/config/target/loopback"


def create_ha(node: vm.Guest, name: str = "d0", control: str = "dev=/dev/vdb", hba: int = 0,
              serial: str | None = None) -> str:
    """Creates and enables an `ha` device through configfs (with unit
    serial `serial` if given, as targetcli sets one); returns its path."""
    d = f"{CORE}/ha_{hba}/{name}"
    node.run(f"mkdir -p {d} && echo -n {vm.q(control)} > {d}/control")
    if serial:
        node.run(f"echo {vm.q(serial)} > {d}/wwn/vpd_unit_serial")
    node.run(f"echo 1 > {d}/enable")
    return d


def loopback_lun(node: vm.Guest, dev: str, wwn: str, ini_wwn: str, rtpi: int = 0,
                 sg: bool = False) -> str:
    """Exports configfs device `dev` as LUN 0 of a tcm_loop target `naa.<wwn>`
    with initiator port `naa.<ini_wwn>`; returns the SCSI disk (/dev/sdX), or
    with `sg` its SCSI generic node (/dev/sgN: a LUN reporting peripheral
    qualifier 1, as a secondary without its peer does, gets no disk).
    tcm_loop TPGs are never enabled, so LIO gives them relative target port
    id 0 unless `rtpi` sets one."""
    tpg = f"{LOOP}/naa.{wwn}/tpgt_1"
    node.run(f"modprobe tcm_loop && mkdir -p {tpg}/lun")
    if rtpi:
        node.run(f"echo {rtpi} > {tpg}/rtpi")
    # The nexus first: linking the LUN makes tcm_loop scan it.
    node.run(f"mkdir -p {tpg}/lun/lun_0 && "
             f"echo naa.{ini_wwn} > {tpg}/nexus && "
             f"ln -s {dev} {tpg}/lun/lun_0/{dev.rsplit('/', 1)[1]}")
    return loopback_node(node, tpg, sg)


def loopback_node(node: vm.Guest, tpg: str, sg: bool = False) -> str:
    """The SCSI disk (or with `sg` the SCSI generic node) of LUN 0 of the
    tcm_loop TPG at configfs path `tpg`, once udev has made it."""
    host = node.run(f"cat {tpg}/address").out.strip()  # "H:C:T"
    return node.run(
        f"udevadm settle; for i in $(seq 100); do "
        f"b=$(ls /sys/class/scsi_device/{host}:0/device/{'scsi_generic' if sg else 'block'} 2>/dev/null); "
        f"test -n \"$b\" && test -c /dev/$b -o -b /dev/$b && echo /dev/$b && exit 0; sleep 0.1; done; "
        f"echo no disk for {host}; exit 1").out.strip()


def clear_loopback(node: vm.Guest) -> None:
    """Removes every tcm_loop target and its LUNs, then the fabric's
    configfs directory (it holds a reference on tcm_loop)."""
    node.run(f"for t in {LOOP}/naa.*/tpgt_*; do "
             f"  for l in $t/lun/lun_*; do rm -f $l/*; rmdir $l; done; "
             f"  echo NULL > $t/nexus; rmdir $t; done 2>/dev/null; "
             f"rmdir {LOOP}/naa.* {LOOP} 2>/dev/null; true")


def clear_ha(node: vm.Guest) -> None:
    """Removes every `ha` device and HBA (LUNs must be gone)."""
    node.run(f"for d in {CORE}/ha_*/*/; do rmdir $d; done 2>/dev/null; "
             f"for h in {CORE}/ha_*; do rmdir $h; done 2>/dev/null; true")


def iscsi_target_for_ha(node: vm.Guest, portal: str = "127.0.0.1", iqn: str = TARGET_IQN) -> str:
    """Creates an open iSCSI target (no auth, dynamic ACLs, writable) with a
    portal on portal:3260 through targetcli; returns its configfs TPG path.
    Call before any `ha` device exists: stock targetcli cannot list them."""
    tpg = f"/iscsi/{iqn}/tpg1"
    for c in [f"/iscsi create {iqn}", f"{tpg}/portals delete 0.0.0.0 3260",
              f"{tpg}/portals create {portal} 3260",
              f"{tpg} set attribute authentication=0 demo_mode_write_protect=0 "
              f"generate_node_acls=1 cache_dynamic_acls=1"]:
        node.run(f"targetcli {c}")
    return f"/sys/kernel/config/target/iscsi/{iqn}/tpgt_1"


def link_lun(node: vm.Guest, tpg: str, dev: str, lun: int = 0) -> None:
    """Exports configfs device `dev` as LUN `lun` of fabric TPG `tpg`."""
    node.run(f"mkdir {tpg}/lun/lun_{lun} && ln -s {dev} {tpg}/lun/lun_{lun}/{dev.rsplit('/', 1)[1]}")


def unlink_luns(node: vm.Guest, tpg: str) -> None:
    node.run(f"for l in {tpg}/lun/lun_*; do rm -f $l/*; rmdir $l; done 2>/dev/null; true")
