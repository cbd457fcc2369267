"""The `ha` backstore's data path on one node, through tcm_loop: fio with
verification, data landing on the backing device, capacity, cache flush,
FUA, WRITE VERIFY, WRITE SAME, UNMAP, COMPARE AND WRITE, and backing-device
errors turned into MEDIUM ERROR sense (issue 3, requirement 4)."""
import pytest

import lio
import vm

BLOCKS = 256 * 2048  # 256 MiB of 512-byte blocks


@pytest.fixture
def disk(node):
    """An `ha` device on /dev/vdb exported through tcm_loop: (node, /dev/sdX)."""
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    try:
        d = lio.create_ha(node)
        yield node, lio.loopback_lun(node, d, "5001405000000001", "5001405000000101")
    finally:
        cleanup(node)


def cleanup(node: vm.Guest) -> None:
    lio.clear_loopback(node)
    lio.clear_ha(node)
    node.run("dmsetup remove_all; rmmod tcm_loop; rmmod tcm_ha")


def md5(g: vm.Guest, dev: str, bs, skip: int, count: int) -> str:
    """md5sum line of `count` blocks of `bs` at block `skip` of `dev`, read direct."""
    return g.run(f"dd if={dev} bs={bs} skip={skip} count={count} iflag=direct 2>/dev/null | md5sum").out


def fio(g: vm.Guest, dev: str, rw: str, bs: str, size: str = "32M", extra: str = "") -> None:
    r = g.run(f"fio --name=v --filename={dev} --direct=1 --ioengine=libaio --iodepth=16 "
              f"--rw={rw} --bs={bs} --size={size} --verify=crc32c --do_verify=1 "
              f"--verify_fatal=1 --output-format=terse --terse-version=3 {extra}", timeout=900)
    fields = r.out.strip().splitlines()[-1].split(";")
    assert fields[4] == "0", r.out  # terse v3: field 5 is the job's error


# make check runs the mixed jobs (each writes and verifies, at 4k and 1M);
# check-full adds the write-only ones.
FIO_JOBS = [("randrw", "4k"), ("rw", "1M")] + ([("randwrite", "4k"), ("write", "1M")] if vm.FULL else [])


@pytest.mark.parametrize("rw,bs", FIO_JOBS)
def test_fio_verify(disk, rw, bs):
    g, sd = disk
    fio(g, sd, rw, bs, "32M" if vm.FULL else "16M")


def test_data_lands_on_backing_device(disk):
    g, sd = disk
    g.run(f"head -c 4M /dev/urandom > /tmp/p && dd if=/tmp/p of={sd} bs=1M seek=7 oflag=direct")
    back = g.run("dd if=/dev/vdb bs=1M skip=7 count=4 iflag=direct 2>/dev/null | md5sum").out
    front = md5(g, sd, "1M", 7, 4)
    want = g.run("md5sum < /tmp/p").out
    assert back.split()[0] == want.split()[0] == front.split()[0]


def test_capacity_and_limits(disk):
    g, sd = disk
    out = g.run(f"sg_readcap -l {sd}").out
    assert f"Last LBA={BLOCKS - 1}" in out and "Logical block length=512 bytes" in out, out
    assert g.run(f"blockdev --getsize64 {sd}").out.strip() == str(BLOCKS * 512)


def test_sync_cache_and_fua(disk):
    g, sd = disk
    g.run(f"sg_sync {sd}")
    g.run(f"sg_sync --immed {sd}")
    # WRITE(10) with FUA, then WRITE(16) with FUA, one block each.
    g.run("head -c 512 /dev/urandom > /tmp/b")
    g.run(f"sg_raw -s 512 -i /tmp/b {sd} 2a 08 00 00 00 10 00 00 01 00")
    g.run(f"sg_raw -s 512 -i /tmp/b {sd} 8a 08 00 00 00 00 00 00 00 11 00 00 00 01 00 00")
    got = md5(g, "/dev/vdb", 512, 16, 2)
    want = g.run("cat /tmp/b /tmp/b | md5sum").out
    assert got.split()[0] == want.split()[0]


def test_write_verify(disk):
    g, sd = disk
    g.run("head -c 4096 /dev/urandom > /tmp/wv")
    g.run(f"sg_write_verify --lba=100 --num=8 --in=/tmp/wv {sd}")
    got = md5(g, "/dev/vdb", 512, 100, 8)
    assert got.split()[0] == g.run("md5sum < /tmp/wv").out.split()[0]


def test_write_same(disk):
    g, sd = disk
    g.run("head -c 512 /dev/urandom > /tmp/ws && for i in $(seq 300); do cat /tmp/ws; done > /tmp/ws300")
    g.run(f"sg_write_same --16 --lba=2000 --num=300 --in=/tmp/ws {sd}")
    got = md5(g, "/dev/vdb", 512, 2000, 300)
    assert got.split()[0] == g.run("md5sum < /tmp/ws300").out.split()[0]
    # Zeroes (the write-zeroes path) over the same range.
    g.run("head -c 512 /dev/zero > /tmp/z")
    g.run(f"sg_write_same --10 --lba=2000 --num=300 --in=/tmp/z {sd}")
    got = md5(g, "/dev/vdb", 512, 2000, 300)
    assert got.split()[0] == g.run("head -c 153600 /dev/zero | md5sum").out.split()[0]


def test_unmap(disk):
    g, sd = disk
    vpd = g.run(f"sg_vpd -p lbpv {sd}").out
    assert "Unmap command supported (LBPU): 1" in vpd, vpd
    g.run(f"head -c 1M /dev/urandom | dd of={sd} bs=1M seek=20 oflag=direct")
    g.run(f"sg_unmap --force --lba={20 * 2048} --num=2048 {sd}")
    # The range is deallocated in the backing image: it reads back as zeroes
    # (QEMU's discard=unmap on a raw file punches a hole).
    got = g.run("dd if=/dev/vdb bs=1M skip=20 count=1 iflag=direct 2>/dev/null | md5sum").out
    assert got.split()[0] == g.run("head -c 1M /dev/zero | md5sum").out.split()[0]


def test_compare_and_write(disk):
    g, sd = disk
    g.run("head -c 512 /dev/urandom > /tmp/old && head -c 512 /dev/urandom > /tmp/new")
    g.run(f"dd if=/tmp/old of={sd} bs=512 seek=3000 oflag=direct")
    g.run("cat /tmp/old /tmp/new > /tmp/caw1 && cat /tmp/new /tmp/old > /tmp/caw2")
    # Matching compare: the new data is written.
    g.run(f"sg_compare_and_write --lba=3000 --num=1 --in=/tmp/caw1 {sd}")
    got = md5(g, "/dev/vdb", 512, 3000, 1)
    assert got.split()[0] == g.run("md5sum < /tmp/new").out.split()[0]
    # The compare now fails (the block holds "new", we compare with "old").
    r = g.run(f"sg_compare_and_write --lba=3000 --num=1 --in=/tmp/caw1 {sd}", check=False)
    assert r.rc == 14, r  # sg3_utils: SG_LIB_CAT_MISCOMPARE
    got = md5(g, "/dev/vdb", 512, 3000, 1)
    assert got.split()[0] == g.run("md5sum < /tmp/new").out.split()[0]


@pytest.fixture
def bad_disk(node):
    """An `ha` device over a dm device whose sectors 4096..4103 fail."""
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    node.run("printf '0 4096 linear /dev/vdb 0\\n4096 8 error\\n4104 %d linear /dev/vdb 4104\\n' "
             f"{BLOCKS - 4104} | dmsetup create tcmhabad")
    try:
        d = lio.create_ha(node, control="dev=/dev/mapper/tcmhabad")
        yield node, lio.loopback_lun(node, d, "5001405000000002", "5001405000000102")
    finally:
        cleanup(node)


def test_backing_errors_are_medium_errors(bad_disk):
    g, sd = bad_disk
    r = g.run(f"sg_raw -r 512 {sd} 28 00 00 00 10 00 00 00 01 00", check=False)
    text = r.out + r.err
    assert r.rc != 0 and "Medium Error" in text and "Unrecovered read error" in text, r
    g.run("head -c 512 /dev/urandom > /tmp/b")
    r = g.run(f"sg_raw -s 512 -i /tmp/b {sd} 2a 00 00 00 10 02 00 00 01 00", check=False)
    text = r.out + r.err
    assert r.rc != 0 and "Medium Error" in text and "Write error" in text, r
    # Blocks around the bad range still work, and the error was logged.
    g.run(f"sg_raw -r 512 {sd} 28 00 00 00 0f ff 00 00 01 00")
    assert "tcm_ha: IO error: block status 10 on read" in g.run("dmesg").out


def test_lifecycle_abuse_while_exported(disk):
    """Enable twice, delete while exported, rmmod while in use: each is
    refused with an error and the LUN keeps working."""
    g, sd = disk
    d = f"{lio.CORE}/ha_0/d0"
    r = g.run(f"echo 1 > {d}/enable", check=False)
    assert r.rc != 0, r
    r = g.run(f"rmdir {d}", check=False)
    assert r.rc != 0 and ("busy" in r.err.lower() or "not empty" in r.err.lower()), r
    r = g.run("rmmod tcm_ha", check=False)
    assert r.rc != 0 and "in use" in r.err, r
    r = g.run(f"echo -n dev=/dev/vdc > {d}/control", check=False)
    assert r.rc != 0 and "busy" in r.err.lower(), r
    g.run(f"dd if=/dev/urandom of={sd} bs=4k count=16 oflag=direct && "
          f"dd if={sd} of=/dev/null bs=4k count=16 iflag=direct")


def test_zero_length_transfers_complete(disk):
    """READ/WRITE with a transfer length of 0 blocks are GOOD (and return
    at once: no bio reaches the device, but the command completes)."""
    g, sd = disk
    for cdb in ("28 00 00 00 00 10 00 00 00 00", "2a 00 00 00 00 10 00 00 00 00",
                "2a 08 00 00 00 10 00 00 00 00", "88 00 00 00 00 00 00 00 00 10 00 00 00 00 00 00"):
        r = g.run(f"sg_raw {sd} {cdb} 2>&1", timeout=60, check=False)
        assert r.rc == 0 and "Good" in r.out, r


def test_readonly_refuses_writes(node):
    """readonly=1: reads work, every kind of write ends with DATA PROTECT,
    WRITE PROTECTED, and the backing device is untouched."""
    node.run("dmesg -C")
    vm.load_tcm_ha(node)
    try:
        node.run("dd if=/dev/urandom of=/dev/vdb bs=4k count=1 oflag=direct")
        before = md5(node, "/dev/vdb", 4096, 0, 1)
        d = lio.create_ha(node, control="dev=/dev/vdb,readonly=1")
        sd = lio.loopback_lun(node, d, "5001405000000003", "5001405000000103")
        assert md5(node, sd, 4096, 0, 1) == before
        # MODE SENSE reports the WP bit, so the initiator's kernel makes
        # the disk read-only and opening it for writing fails (EROFS):
        # the commands go through the SCSI generic node.
        name = sd.rsplit("/", 1)[1]
        assert node.run(f"cat /sys/block/{name}/ro").out.strip() == "1"
        sg = "/dev/" + node.run(f"ls /sys/block/{name}/device/scsi_generic").out.split()[0]
        node.run("head -c 512 /dev/urandom > /tmp/b")
        for what, cdb, data in (("WRITE(10)", "2a 00 00 00 00 00 00 00 01 00", "-s 512 -i /tmp/b"),
                                ("WRITE SAME(10)", "41 00 00 00 00 00 00 00 01 00", "-s 512 -i /tmp/b"),
                                ("UNMAP", "42 00 00 00 00 00 00 00 18 00",
                                 "-s 24 -i /tmp/unmap")):
            if what == "UNMAP":
                node.run("printf '\\x00\\x16\\x00\\x10\\x00\\x00\\x00\\x00"
                         "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00' "
                         "> /tmp/unmap")
            r = node.run(f"sg_raw {data} {sg} {cdb} 2>&1", check=False)
            assert r.rc != 0 and "Data Protect" in r.out and "Write protected" in r.out, (what, r.out)
        assert md5(node, "/dev/vdb", 4096, 0, 1) == before
    finally:
        cleanup(node)
