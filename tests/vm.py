"""QEMU test bed for tcm_ha: guests booted from the cached image, private
point-to-point links on loopback, a command agent over virtio-serial, and
kernel splat detection.

Nothing shared is modified: each guest boots from a qcow2 overlay over the
cached base image; the repository is exported read-only over 9p (/mnt/repo).
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TCM_HA_CACHE", Path.home() / ".cache" / "tcm_ha"))
# TCM_HA_FULL=1 (`make check-full`): every test at its full size. make check
# keeps to CI's time (90 min on 2 cores from a cold cache): the reboot test,
# the interlink faults in modes 1 and 0 and the longer repetitions are
# left to the full run (see Documentation/testing.rst).
FULL = os.environ.get("TCM_HA_FULL") == "1"

# Anything matching these in a guest's kernel log fails the test.
SPLAT_RE = re.compile(
    r"(------------\[ cut here \]------------|WARNING: CPU: |BUG: |Oops|Kernel panic|"
    r"general protection fault|kernel BUG at|possible circular locking|"
    r"possible recursive locking|inconsistent lock state|suspicious RCU usage|"
    r"WARNING: possible|WARNING: suspicious|KFENCE: |INFO: task .* blocked for more than|"
    r"soft lockup|hard LOCKUP|rcu_sched self-detected stall|rcu: INFO|panicked at|"
    r"rust_panic|UBSAN:|list_add corruption|list_del corruption|unreferenced object 0x|"
    r"Call Trace:)"
)


def setup_output(*args: str) -> str:
    return subprocess.run([str(REPO / "scripts" / "setup.sh"), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: QEMU is killed if the test process dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    os.setsid()


# The "parent" of PR_SET_PDEATHSIG is the thread that forked: a QEMU started
# from a short-lived worker thread (a ThreadPoolExecutor in a test) would be
# killed when that thread exits. Every QEMU is therefore forked by this one
# thread, which lives as long as the test process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qemu-spawner")


class GuestError(Exception):
    pass


@dataclass
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Nic:
    mac: str
    local_port: int
    remote_port: int
    addr: str  # CIDR inside the guest, e.g. 192.0.2.1/24


@dataclass
class Guest:
    name: str
    rundir: Path
    mem_mb: int = 1024
    # The kernel's debug checks, switched off by boot parameters of the
    # same kernel: kmemleak (off: left out of the leak scans too) and
    # lockdep's proving of lock order. Under TCG they cost a guest most of
    # its CPU: kmemleak alone half its boot time. Off for the initiator,
    # which runs none of tcm_ha's code (see conftest.build_trio).
    kmemleak: bool = True
    lockdep: bool = True
    # QEMU's -icount option under TCG (benchmarks: guest time counted in
    # instructions executed, not the host's drifting wall clock).
    icount: str = ""
    nics: list[Nic] = field(default_factory=list)
    disks: list[Path] = field(default_factory=list)
    # Sizes in MiB of null disks (QEMU's null-co: reads leave the guest's
    # buffer as it was, writes are dropped, at once and with no work on
    # the host: benchmarks of the guest's own IO path).
    null_disks: list[int] = field(default_factory=list)
    # Images attached to more than one guest (locking off: the guests share it).
    shared: list[Path] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    _sock: socket.socket | None = None
    _buf: bytes = b""
    _next_id: int = 1
    _console_mark: int = 0

    @property
    def console_path(self) -> Path:
        return self.rundir / f"{self.name}-console.log"

    def add_disk(self, size_mb: int, name: str = "disk") -> Path:
        self.rundir.mkdir(parents=True, exist_ok=True)
        p = self.rundir / f"{self.name}-{name}.raw"
        with open(p, "wb") as f:
            f.truncate(size_mb << 20)
        self.disks.append(p)
        return p

    def start(self, accel: str, keep_root: bool = False) -> None:
        """Boots the guest from a fresh root overlay, or with `keep_root`
        from the overlay of its last boot if there is one (what the guest
        wrote to its root file system survives, as on a real reboot)."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        base = Path(setup_output("--print-image"))
        kernel = Path(setup_output("--print-kernel"))
        if not base.exists() or not kernel.exists():
            raise GuestError("guest image or kernel missing: run `make setup`")
        overlay = self.rundir / f"{self.name}-root.qcow2"
        if not (keep_root and overlay.exists()):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                            str(overlay)], check=True)
        self.agent_path = self.rundir / f"{self.name}-agent.sock"
        self.qmp_path = self.rundir / f"{self.name}-qmp.sock"
        for p in (self.agent_path, self.qmp_path):
            p.unlink(missing_ok=True)
        self._buf = b""
        cmdline = (f"root=/dev/vda rw console=ttyS0 loglevel=5 net.ifnames=0 panic=1 "
                   f"systemd.show_status=0 th.name={self.name} kfence.sample_interval=100 "
                   f"kunit.filter_glob=tcm_ha*")
        # The guests are throwaway test machines: no CPU-bug mitigations.
        # Under TCG the retpolines and return thunks cost a guest a third
        # of its 4k IOPS (measured 106 with, 157 without, all checks on).
        cmdline += " mitigations=off"
        if not self.kmemleak:
            cmdline += " kmemleak=off"
        if not self.lockdep:
            cmdline += " lockdep.prove_locking=0"
        args = ["qemu-system-x86_64", "-name", f"tcm_ha-{self.name}", "-nodefaults",
                "-display", "none", "-no-reboot", "-m", str(self.mem_mb), "-smp", "1",
                "-kernel", str(kernel), "-append", cmdline,
                "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
                "-chardev", f"file,id=con,path={self.console_path}", "-serial", "chardev:con",
                "-chardev", f"socket,id=agent,path={self.agent_path},server=on,wait=off",
                "-device", "virtio-serial-pci",
                "-device", "virtserialport,chardev=agent,name=th.agent",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on"]
        if accel == "kvm":
            args += ["-accel", "kvm", "-cpu", "host"]
        else:
            args += ["-accel", "tcg", "-cpu", "max"]
            if self.icount:
                args += ["-icount", self.icount]
        for d in self.disks:
            args += ["-drive", f"file={d},if=virtio,format=raw,cache=unsafe,discard=unmap"]
        for mb in self.null_disks:
            args += ["-drive", f"driver=null-co,if=virtio,read-zeroes=off,size={mb << 20}"]
        for d in self.shared:
            # Both QEMUs write through the host page cache: coherent.
            args += ["-drive", f"file={d},if=virtio,format=raw,cache=unsafe,file.locking=off"]
        for i, n in enumerate(self.nics):
            args += ["-netdev", f"dgram,id=n{i},local.type=inet,local.host=127.0.0.1,"
                     f"local.port={n.local_port},remote.type=inet,remote.host=127.0.0.1,"
                     f"remote.port={n.remote_port}",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={n.mac}"]
        log = open(self.rundir / f"{self.name}-qemu.log", "wb")
        self.proc = _SPAWNER.submit(subprocess.Popen, args, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, preexec_fn=_die_with_parent).result()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _connect(self, deadline: float) -> None:
        while time.time() < deadline:
            if not self.alive():
                raise GuestError(f"{self.name}: QEMU exited early:\n{self.console_tail()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.agent_path))
                self._sock = s
                return
            except OSError:
                s.close()
                time.sleep(0.1)
        raise GuestError(f"{self.name}: agent socket never appeared")

    def _request(self, cmd: str, timeout: float) -> dict:
        rid = self._next_id
        self._next_id += 1
        assert self._sock is not None
        self._sock.sendall(json.dumps({"id": rid, "cmd": cmd, "timeout": timeout}).encode() + b"\n")
        deadline = time.time() + timeout + 15
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if reply.get("id") == rid:
                    return reply
            left = deadline - time.time()
            if left <= 0 or not self.alive():
                raise GuestError(f"{self.name}: no answer to {cmd!r} "
                                 f"({'QEMU exited' if not self.alive() else 'timeout'})\n"
                                 f"{self.console_tail()}")
            self._sock.settimeout(min(left, 1.0))
            try:
                chunk = self._sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                # QEMU closed the socket: the guest reset or powered off
                # (-no-reboot), or QEMU died. Say which, with the console.
                time.sleep(0.5)
                raise GuestError(f"{self.name}: agent connection lost ({e}; "
                                 f"{'QEMU exited' if not self.alive() else 'QEMU still running'})\n"
                                 f"{self.console_tail()}") from e
            if not chunk:
                raise GuestError(f"{self.name}: agent connection closed\n{self.console_tail()}")
            self._buf += chunk

    def wait_ready(self, timeout: float) -> float:
        """Waits until the agent answers; returns the boot time in seconds."""
        t0 = time.time()
        deadline = t0 + timeout
        self._connect(deadline)
        while True:
            try:
                if self._request("true", 5)["rc"] == 0:
                    break
            except GuestError:
                if time.time() > deadline or not self.alive():
                    raise GuestError(f"{self.name}: not ready after {timeout}s\n{self.console_tail()}")
        took = time.time() - t0
        if self.kmemleak:
            # kmemleak's own thread scans all memory 60 s after boot and then
            # every 10 min, minutes of CPU each under TCG; the tests scan
            # when they want a verdict (kmemleak_scan), so it is stopped.
            self.run("echo scan=off > /sys/kernel/debug/kmemleak", timeout=600, check=False)
        return took

    def run(self, cmd: str, timeout: float = 120, check: bool = True) -> Result:
        r = self._request(cmd, timeout)
        res = Result(r["rc"], r["out"], r["err"])
        if check and res.rc != 0:
            raise GuestError(f"{self.name}: `{cmd}` exited {res.rc}\nstdout:\n{res.out}\nstderr:\n{res.err}")
        return res

    def configure_network(self) -> None:
        for n in self.nics:
            self.run(f"dev=$(ip -o link | awk -F': ' '/{n.mac}/ {{print $2}}'); "
                     f"test -n \"$dev\" && ip addr add {n.addr} dev $dev && ip link set $dev up")
        self.run("ip link set lo up")

    def kmemleak_scan(self) -> str:
        """Scans twice (kmemleak reports an object only once its checksum is
        stable across two scans) and returns the leak reports, minus objects
        allocated by the boot CPU before init (known false positives).
        Nothing for a guest booted without kmemleak."""
        if not self.kmemleak:
            return ""
        self.run("echo scan > /sys/kernel/debug/kmemleak; echo scan > /sys/kernel/debug/kmemleak",
                 timeout=600, check=False)
        text = self.run("cat /sys/kernel/debug/kmemleak", timeout=300, check=False).out
        blocks = re.split(r"(?m)^(?=unreferenced object)", text)
        return "".join(b for b in blocks if b.strip() and "start_kernel+" not in b)

    def console_tail(self, n: int = 60) -> str:
        try:
            lines = self.console_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no console log)"
        return "\n".join(lines[-n:])

    def mark(self) -> None:
        """Starts a new splat-detection window at the current console position."""
        try:
            self._console_mark = self.console_path.stat().st_size
        except OSError:
            self._console_mark = 0

    def new_console(self) -> str:
        try:
            with open(self.console_path, "rb") as f:
                f.seek(self._console_mark)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def qmp(self, command: str, **arguments) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            f.readline()
            for req in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
                f.write(json.dumps(req).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def throttle_writes(self, image: str, bps: int) -> None:
        """Limits writes to the guest's drive whose image file name ends
        with `image` to `bps` bytes per second (0: no limit), through QMP
        block_set_io_throttle: IO then stays in flight long enough to act
        on it. QEMU's bucket starts empty: the first write after this goes
        through at once and the next ones wait until the bucket has drained
        it, so a test that needs its writes held writes `bps * seconds`
        bytes first (see hapair.write_cdb)."""
        blocks = self.qmp("query-block")["return"]
        names = [d["device"] for d in blocks
                 if d.get("inserted", {}).get("file", "").endswith(image)]
        assert len(names) == 1, blocks
        r = self.qmp("block_set_io_throttle", device=names[0], bps=0, bps_rd=0, bps_wr=bps,
                     iops=0, iops_rd=0, iops_wr=0)
        assert "return" in r, r

    def restart(self, accel: str, timeout: float = 600, keep_root: bool = False) -> None:
        """Boots the guest again after its QEMU exited (it runs with
        -no-reboot, so a guest reboot ends QEMU); `keep_root` as for
        start()."""
        if self.proc is not None:
            self.proc.wait(timeout=60)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""
        self.start(accel, keep_root=keep_root)
        self.wait_ready(timeout)
        self.configure_network()
        self.mark()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.alive():
            try:
                # Sync so the overlay is consistent, then power off at once.
                self.run("sync", timeout=20, check=False)
            except GuestError:
                pass
            self.proc.kill()
        self.proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def splats(text: str) -> list[str]:
    """Returns the kernel log lines (with some context) that look like a splat."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if SPLAT_RE.search(line):
            found.append("\n".join(lines[max(0, i - 2): i + splat_length(lines[i:])]))
    return found


def splat_length(lines: list[str]) -> int:
    """Lines of the report starting at lines[0]: 25, or for a KFENCE/KASAN
    report everything up to its closing ==== rule (at most 80 lines), so that
    its "freed by" stack is kept."""
    if "KFENCE: " in lines[0] or "KASAN: " in lines[0]:
        for n, line in enumerate(lines[1:80], start=2):
            if re.search(r"\] =+$", line) or line.strip("=") == "" and len(line) > 20:
                return n
        return min(len(lines), 80)
    return 25


def probe_accel() -> str:
    """TCG unless TCM_HA_ACCEL says otherwise or a KVM probe boot (cached per
    host boot) reached the agent."""
    want = os.environ.get("TCM_HA_ACCEL", "auto")
    if want in ("tcg", "kvm"):
        return want
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    stamp = CACHE / f"kvm-probe-{boot_id}"
    if stamp.exists():
        return stamp.read_text().strip()
    rundir = CACHE / "kvm-probe"
    g = Guest("kvmprobe", rundir, mem_mb=512)
    result = "tcg"
    try:
        g.start("kvm")
        g.wait_ready(45)
        result = "kvm"
    except (GuestError, OSError):
        # Hung, or QEMU died (some hosts' KVM aborts it on an MSR it
        # cannot set), which resets the agent socket.
        pass
    finally:
        g.stop()
    stamp.write_text(result)
    return result


class Bed:
    """A set of guests and the point-to-point links between them."""

    def __init__(self, rundir: Path):
        self.rundir = rundir
        self.guests: dict[str, Guest] = {}
        self._link_no = 0

    def guest(self, name: str, **kw) -> Guest:
        g = Guest(name, self.rundir, **kw)
        self.guests[name] = g
        return g

    def link(self, a: Guest, a_addr: str, b: Guest, b_addr: str) -> None:
        """A private Ethernet segment between a and b (UDP datagrams on loopback)."""
        self._link_no += 1
        pa, pb = free_udp_port(), free_udp_port()
        a.nics.append(Nic(f"52:54:00:{self._link_no:02x}:00:{len(a.nics) + 1:02x}", pa, pb, a_addr))
        b.nics.append(Nic(f"52:54:00:{self._link_no:02x}:01:{len(b.nics) + 1:02x}", pb, pa, b_addr))

    def shared_disk(self, size_mb: int, *guests: Guest, name: str = "shared") -> Path:
        """A raw image attached to every guest in `guests`, after their own
        disks (shared storage, as a dual-ported array gives two nodes)."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        p = self.rundir / f"{name}.raw"
        with open(p, "wb") as f:
            f.truncate(size_mb << 20)
        for g in guests:
            g.shared.append(p)
        return p

    def start(self, accel: str, timeout: float = 900, leak_baseline: bool = True) -> dict[str, float]:
        """Boots all guests at once and prepares them in parallel; returns the
        time each took to answer its agent. `leak_baseline` (for tests) has
        kmemleak scan and forget what boot left (minutes under TCG); the demo
        and the benchmarks skip it."""
        for g in self.guests.values():
            g.start(accel)

        def prepare(g: Guest) -> float:
            t = g.wait_ready(timeout)
            g.configure_network()
            if leak_baseline and g.kmemleak:
                # Forget what kmemleak finds from boot; tests scan for their own leaks.
                g.kmemleak_scan()
                g.run("echo clear > /sys/kernel/debug/kmemleak", check=False)
            g.mark()
            return t

        with ThreadPoolExecutor(len(self.guests)) as pool:
            futures = {name: pool.submit(prepare, g) for name, g in self.guests.items()}
            return {name: f.result() for name, f in futures.items()}

    def stop(self) -> None:
        for g in self.guests.values():
            g.stop()


def load_tcm_ha(g: Guest) -> None:
    g.run("modprobe target_core_mod && insmod /mnt/repo/tcm_ha.ko")


def q(s: str) -> str:
    return shlex.quote(s)
