#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""linkfault: a fault-injecting TCP proxy for the tcm_ha interlink (issue 8).

    linkfault.py --listen HOST:PORT --to HOST:PORT --control PATH [--names C,T] [--seed N]
    linkfault.py --control PATH COMMAND [ARG...]      send a command (several: separated by
                                                      ";"), print the replies
    linkfault.py --self-test                          check every command on localhost

The proxy accepts TCP connections on --listen and forwards each to --to, both
ways. Its two sides are named by --names (default a,b): the accepted client
is the first name, the target the second, so with the default "a2b" is what
the client sends and "b2a" what the target sends. For the interlink the
proxy runs on node B in front of node A (B connects to the proxy, the proxy
to A's listener) with --names b,a, so that b2a is B's data to A.

Commands come one line each on a UNIX stream socket (--control) and get one
line back, "ok ..." or "err ...". DIR is a direction (a2b, b2a) or "both".
One-shot faults are queued per direction and each hits the next data that
direction carries (a connection's, whichever is current or next):

  pass                  forward normally: no delay, no stall, refuse off,
                        queued one-shot faults dropped
  delay [DIR] MS        hold every chunk MS ms before forwarding (default
                        both directions; in order, pipelined; 0 ends it)
  drop DIR N            discard the next N bytes
  drop DIR frame        discard the next whole frame
  dup DIR [frame]       send the next chunk (or whole frame) twice
  truncate DIR N        forward only N bytes of the next chunk, then close
                        both sides of that connection
  corrupt DIR [any|header|payload]
                        flip one byte: `any` in the next chunk, at a random
                        offset past its first 16 bytes (shorter chunk: any
                        offset); `header` in the next frame's header, one
                        of the bytes whose change a receiver detects at
                        once (magic, version, type, flags, reserved,
                        sequence); `payload` in the payload of the next
                        frame that has one (caught by the frame's CRC32C
                        trailer)
  reorder DIR           take the next whole frame out of the stream, close
                        that connection (as `cut`) and send the frame on
                        the next connection of that direction, after its
                        first frame: a frame of an earlier connection
                        arriving out of order in a new one
  stall DIR             stop reading from that direction's sending side
                        (its socket buffers fill, its sends block) until
                        `unstall` or `pass`; applies to new connections too
  unstall [DIR]         read again (default both)
  cut [rst]             close every current connection now (FIN; with rst
                        an RST); new connections are accepted
  refuse on|off         close every new connection at once (current ones
                        stay): with `cut`, keeps the link down
  flaps N MIN MAX [F]   N link flaps in the background: wait until a
                        connection is up (it has carried F frames each
                        way, default 5: past the interlink's handshake),
                        keep it MIN..MAX ms (uniform), cut it; after the
                        last cut, wait until one is up again. Each flap is
                        logged with the time the link took to come back
                        (`flap I of N: up again after S s`), the end as
                        `flaps end: ...`; stats show
                        flaps=DONE/N and flapping=yes|no|failed. A link
                        not up within 30 s fails the run. `flaps stop`
                        ends it.
  stats                 counters: connections, bytes forwarded each way,
                        faults applied, faults still queued (pending)
  quit                  stop the proxy

Frames are the interlink's (Documentation/protocol.rst, version 6): a
24-byte header (magic "tcHA", payload length u32 at offset 12, sequence u64
at 16), the payload, and a 4-byte trailer, the CRC32C of header and payload.
So a receiver detects a changed byte anywhere in a frame (a changed length
field only once the bytes it announces have arrived). The proxy follows
the frames of each direction as sent (its own faults do not shift its
view); a direction that does not start with the magic is plain bytes, and
a frame fault queued for it is dropped with a log line.

Every action is logged with a timestamp to stderr. Python 3.9+, stdlib only.
"""
from __future__ import annotations

import argparse
import collections
import os
import queue
import random
import select
import signal
import socket
import struct
import sys
import threading
import time

# The frame trailer's CRC32C, shared with the other test tools.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from wirecrc import crc32c  # noqa: E402

MAGIC = b"tcHA"
HEADER = 24
TRAILER = 4                # CRC32C of header and payload, after the payload
# Header bytes whose change a tcm_ha receiver rejects as soon as the frame
# is in: magic (0-3), version (4-5), flags (8-9) and reserved (10-11) by the
# header checks; the type (6-7: unknown, wrong length, or the checksum) and
# the sequence number (16-23) by the checksum. Not the length (12-15): a
# longer one makes the receiver wait for bytes that may come late.
HEADER_CHECKED = tuple(range(0, 12)) + tuple(range(16, 24))
# A length beyond this is not a tcm_ha frame (its limit is 256 KiB).
MAX_FRAME = 16 << 20
CHUNK = 65536
QUEUE_CHUNKS = 64          # per direction and connection: bounds the proxy's memory
POLL = 0.05
CONNECT_TIMEOUT = 3.0
FLAP_RECOVERY_S = 30.0


def now_text() -> str:
    t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def frame_info(hdr: bytes) -> str:
    ty, length, seq = struct.unpack_from("<H", hdr, 6)[0], struct.unpack_from("<I", hdr, 12)[0], \
        struct.unpack_from("<Q", hdr, 16)[0]
    return f"type 0x{ty:04x} seq {seq} ({HEADER + length + TRAILER} bytes)"


def parse_addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {s!r}")
    return host.strip("[]"), int(port)


class Framer:
    """Follows the frame boundaries of one direction's byte stream."""

    def __init__(self) -> None:
        self.ok = True        # the stream still looks framed
        self.pos = 0          # bytes fed so far
        self.next = 0         # stream offset of the next frame's start
        self.hdr = b""        # header bytes of that frame, when split across chunks

    def feed(self, data: bytes) -> list[int]:
        """Stream offsets of the frames that start within `data`."""
        base, end = self.pos, self.pos + len(data)
        starts = []
        while self.ok and self.next < end:
            if self.next >= base:
                # A frame starts in this chunk (no header byte seen yet).
                starts.append(self.next)
                i = self.next - base
            else:
                # The rest of a header that began in an earlier chunk.
                i = 0
            self.hdr += data[i:i + HEADER - len(self.hdr)]
            if len(self.hdr) < HEADER:
                break
            length = struct.unpack_from("<I", self.hdr, 12)[0]
            if self.hdr[:4] != MAGIC or length > MAX_FRAME:
                self.ok = False
                break
            self.next += HEADER + length + TRAILER
            self.hdr = b""
        self.pos = end
        return starts


class Op:
    """One queued one-shot fault."""
    _ids = 0

    def __init__(self, kind: str, unit: str = "chunk", n: int = 0, where: str = "any"):
        Op._ids += 1
        self.id, self.kind, self.unit, self.n, self.left, self.where = Op._ids, kind, unit, n, n, where

    def __str__(self) -> str:
        if self.kind == "corrupt":
            arg = self.where
        elif self.unit == "frame":
            arg = "frame"
        else:
            arg = str(self.n) if self.kind in ("drop", "truncate") else ""
        return f"#{self.id} {self.kind} {arg}".rstrip()


class Conn:
    """One proxied connection: two pipes, four threads."""

    def __init__(self, proxy: "Proxy", num: int, client: socket.socket, target: socket.socket, peer: str):
        self.proxy, self.num, self.peer = proxy, num, peer
        self.socks = (client, target)
        self.lock = threading.Lock()
        self.closed = False
        d_ct, d_tc = proxy.dirs
        self.pipes = (Pipe(self, d_ct, client, target), Pipe(self, d_tc, target, client))

    def start(self) -> None:
        for p in self.pipes:
            p.start()

    def close(self, why: str, rst: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in self.socks:
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.proxy.closed(self, why)


class Pipe:
    """One direction of a connection: a reader applies the faults, a writer
    forwards (after the delay), a bounded queue between them."""

    def __init__(self, conn: Conn, d: str, src: socket.socket, dst: socket.socket):
        self.conn, self.dir, self.src, self.dst = conn, d, src, dst
        self.proxy = conn.proxy
        self.q: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        self.framer = Framer()
        self.hold: bytearray | None = None   # a frame being gathered for a frame fault
        self.hold_op: Op | None = None
        self.hold_start = 0
        self.frames = 0                      # frame starts seen in this direction

    def start(self) -> None:
        for fn, what in ((self.read_loop, "rd"), (self.write_loop, "wr")):
            threading.Thread(target=self.guard, args=(fn,), daemon=True,
                             name=f"c{self.conn.num}-{self.dir}-{what}").start()

    def guard(self, fn) -> None:
        try:
            fn()
        except (OSError, ValueError) as e:
            self.conn.close(f"{self.dir}: {e}")
        except Exception as e:  # a bug: say so, keep the proxy running
            self.proxy.log(f"conn {self.conn.num}: {self.dir}: internal error {e!r}")
            self.conn.close(f"{self.dir}: internal error")

    def log(self, msg: str) -> None:
        self.proxy.log(f"conn {self.conn.num}: {self.dir}: {msg}")

    def read_loop(self) -> None:
        px, conn = self.proxy, self.conn
        while not conn.closed:
            if px.is_stalled(self.dir):
                px.wait_change(POLL)
                continue
            if not select.select([self.src], [], [], POLL)[0]:
                continue
            try:
                data = self.src.recv(CHUNK)
            except OSError as e:
                conn.close(f"{self.dir}: receive failed: {e}")
                return
            if not data:
                self.put((0.0, b"", "eof"))
                return
            t = time.monotonic()
            # Stalled after select: the chunk waits with the rest.
            while px.is_stalled(self.dir) and not conn.closed:
                px.wait_change(POLL)
            out, close = self.edit(data)
            due = t + px.delay[self.dir] / 1000.0
            for piece in out:
                if piece and not self.put((due, piece, None)):
                    return
            if close:
                self.put((due, b"", close))
                return

    def put(self, item) -> bool:
        while not self.conn.closed:
            try:
                self.q.put(item, timeout=POLL)
                return True
            except queue.Full:
                pass
        return False

    def write_loop(self) -> None:
        px, conn = self.proxy, self.conn
        while True:
            try:
                due, data, end = self.q.get(timeout=POLL)
            except queue.Empty:
                if conn.closed:
                    return
                continue
            while not conn.closed and time.monotonic() < due:
                time.sleep(min(POLL, max(0.0, due - time.monotonic())))
            if conn.closed:
                return
            if data:
                try:
                    self.dst.sendall(data)
                except OSError as e:
                    conn.close(f"{self.dir}: send failed: {e}")
                    return
                px.count(self.dir, len(data))
            if end == "eof":
                conn.close(f"{self.dir}: sender closed")
                return
            if end == "truncate":
                conn.close(f"{self.dir}: truncated")
                return
            if end == "reorder":
                conn.close(f"{self.dir}: a frame taken for the next connection")
                return

    # -- faults ------------------------------------------------------------

    def edit(self, data: bytes) -> tuple[list[bytes], str | None]:
        """Applies the queued faults to one chunk: the pieces to forward and
        why to close the connection after them (None: keep it)."""
        px = self.proxy
        pos = self.framer.pos
        starts = self.framer.feed(data)
        seen, self.frames = self.frames, self.frames + len(starts)
        out: list[bytes] = []
        pending = data
        with px.lock:
            if self.conn.closed:
                return [data], None
            carry = px.carry.get(self.dir)
            # The first frame start in this chunk past this connection's
            # first frame.
            later = starts[max(0, 1 - seen):]
            if carry and carry[1] < self.conn.num and self.framer.ok and later:
                # The frame of the earlier connection goes in before it
                # (the chunk as sent; queued faults wait for the next one).
                k = later[0] - pos
                del px.carry[self.dir]
                self.log(f"{carry[2]}: frame {frame_info(carry[0])} of conn {carry[1]} sent after this "
                         f"connection's first frame")
                return [data[:k], carry[0], data[k:]], None
            while pending:
                if self.hold is not None:
                    self.hold += pending
                    pending = b""
                    if len(self.hold) < HEADER:
                        break
                    total = HEADER + struct.unpack_from("<I", self.hold, 12)[0] + TRAILER
                    if self.hold[:4] != MAGIC or total > MAX_FRAME:
                        if self.hold_op:
                            self.log(f"{self.hold_op}: the stream is not framed: fault dropped")
                        out.append(bytes(self.hold))
                        self.hold, self.hold_op = None, None
                        break
                    if len(self.hold) < total:
                        break
                    frame, rest = bytes(self.hold[:total]), bytes(self.hold[total:])
                    op, self.hold, self.hold_op = self.hold_op, None, None
                    # (op is None when `pass` cancelled the fault.)
                    out += self.frame_fault(op, frame) if op else [frame]
                    if op and op.kind == "reorder":
                        # The rest of the chunk belongs to the closed connection.
                        return out, "reorder"
                    pos = self.hold_start + total
                    pending = rest
                    continue
                ops = px.ops[self.dir]
                if not ops:
                    out.append(pending)
                    break
                op = ops[0]
                if op.unit == "frame":
                    if not self.framer.ok:
                        ops.popleft()
                        self.log(f"{op}: the stream is not framed: fault dropped")
                        continue
                    s = next((x for x in starts if x >= pos), None)
                    if s is None:
                        out.append(pending)
                        break
                    if s > pos:
                        out.append(pending[:s - pos])
                    ops.popleft()
                    self.hold, self.hold_op, self.hold_start = bytearray(), op, s
                    pending = pending[s - pos:]
                    pos = s
                    continue
                if op.kind == "drop":
                    n = min(op.left, len(pending))
                    op.left -= n
                    pending = pending[n:]
                    pos += n
                    if op.left == 0:
                        ops.popleft()
                        px.applied(op)
                        self.log(f"{op}: dropped {op.n} bytes (up to stream offset {pos})")
                    continue
                ops.popleft()
                px.applied(op)
                if op.kind == "dup":
                    out += [pending, pending]
                    self.log(f"{op}: sent a {len(pending)}-byte chunk twice (stream offset {pos})")
                elif op.kind == "truncate":
                    out.append(pending[:op.n])
                    self.log(f"{op}: forwarded {min(op.n, len(pending))} of {len(pending)} bytes, closing")
                    return out, "truncate"
                elif op.kind == "corrupt":
                    lo = 16 if len(pending) > 16 else 0
                    i = px.rnd.randrange(lo, len(pending))
                    out.append(self.flip(pending, i, f"{op}: chunk byte {i} (stream offset {pos + i})"))
                break
        return out, None

    def flip(self, data: bytes, i: int, what: str) -> bytes:
        b = bytearray(data)
        old = b[i]
        b[i] ^= self.proxy.rnd.randrange(1, 256)
        self.log(f"{what}: 0x{old:02x} -> 0x{b[i]:02x}")
        return bytes(b)

    def frame_fault(self, op: Op, frame: bytes) -> list[bytes]:
        """A frame fault on one whole frame (the proxy's lock held)."""
        px = self.proxy
        info = frame_info(frame)
        if op.kind == "corrupt" and op.where == "payload" and len(frame) == HEADER + TRAILER:
            # No payload: the next frame.
            px.ops[self.dir].appendleft(op)
            return [frame]
        px.applied(op)
        if op.kind == "drop":
            self.log(f"{op}: dropped frame {info}")
            return []
        if op.kind == "dup":
            self.log(f"{op}: sent frame {info} twice")
            return [frame, frame]
        if op.kind == "reorder":
            px.carry[self.dir] = (frame, self.conn.num, op)
            self.log(f"{op}: took frame {info} out, closing the connection")
            return []
        if op.where == "header":
            i = px.rnd.choice(HEADER_CHECKED)
        else:
            i = px.rnd.randrange(HEADER, len(frame) - TRAILER)
        return [self.flip(frame, i, f"{op}: byte {i} of frame {info}")]


class Proxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], control: str,
                 names: tuple[str, str] = ("a", "b"), seed: int | None = None, log=None):
        self.listen_addr, self.target, self.control_path = listen, target, control
        self.names = names
        self.dirs = (f"{names[0]}2{names[1]}", f"{names[1]}2{names[0]}")
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        self.rnd = random.Random(self.seed)
        self.stream = log if log is not None else sys.stderr
        self.log_lock = threading.Lock()
        self.lock = threading.RLock()
        self.change = threading.Condition(self.lock)
        self.ops: dict[str, collections.deque] = {d: collections.deque() for d in self.dirs}
        # Per direction: a frame taken by `reorder`, the number of its
        # connection, and the fault.
        self.carry: dict[str, tuple[bytes, int, Op]] = {}
        self.delay = {d: 0 for d in self.dirs}
        self.stalled: set[str] = set()
        self.refuse = False
        self.conns: dict[int, Conn] = {}
        self.connecting: set[int] = set()   # accepted, the target not connected yet
        self.cuts = 0                       # `cut` commands so far
        self.flap_plan = 0                  # flaps asked for by the last `flaps`
        self.flap_done = 0                  # of them, cut and up again
        self.flap_state = "no"
        self.flap_stop = threading.Event()
        self.flap_recovery = FLAP_RECOVERY_S
        self.counters = collections.Counter()
        self.stopping = threading.Event()
        self.lsock = socket.create_server(listen, family=socket.AF_INET6 if ":" in listen[0] else socket.AF_INET)
        self.port = self.lsock.getsockname()[1]
        if os.path.exists(control):
            os.unlink(control)
        self.csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.csock.bind(control)
        self.csock.listen(8)

    # -- bookkeeping -------------------------------------------------------

    def log(self, msg: str) -> None:
        with self.log_lock:
            try:
                self.stream.write(f"{now_text()} linkfault: {msg}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def is_stalled(self, d: str) -> bool:
        return d in self.stalled

    def wait_change(self, timeout: float) -> None:
        with self.change:
            self.change.wait(timeout)

    def count(self, d: str, n: int) -> None:
        with self.lock:
            self.counters[d] += n

    def applied(self, op: Op) -> None:
        self.counters["faults"] += 1
        self.counters[op.kind] += 1

    def closed(self, conn: Conn, why: str) -> None:
        with self.lock:
            self.conns.pop(conn.num, None)
            for p in conn.pipes:
                if p.hold_op is not None:
                    # A frame fault that had begun gathering its frame is
                    # queued again for the next connection.
                    self.ops[p.dir].appendleft(p.hold_op)
                    p.hold, p.hold_op = None, None
        self.log(f"conn {conn.num}: closed ({why})")

    # -- connections -------------------------------------------------------

    def serve(self) -> None:
        """Runs until `quit` (or stop())."""
        self.log(f"listening on {self.listen_addr[0]}:{self.port}, forwarding to "
                 f"{self.target[0]}:{self.target[1]}, control {self.control_path}, "
                 f"directions {self.dirs[0]} (client to target) and {self.dirs[1]}, seed {self.seed}")
        threading.Thread(target=self.control_loop, daemon=True, name="control").start()
        try:
            while not self.stopping.is_set():
                try:
                    if not select.select([self.lsock], [], [], 0.2)[0]:
                        continue
                    c, addr = self.lsock.accept()
                except OSError:
                    if self.stopping.is_set():
                        break
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.counters["conns"] += 1
                    num = self.counters["conns"]
                    refuse = self.refuse
                    if refuse:
                        self.counters["refused"] += 1
                peer = f"{addr[0]}:{addr[1]}"
                if refuse:
                    self.log(f"conn {num}: from {peer} refused")
                    try:
                        c.close()
                    except OSError:
                        pass
                    continue
                with self.lock:
                    self.connecting.add(num)
                    cuts = self.cuts
                threading.Thread(target=self.open_target, args=(num, c, peer, cuts), daemon=True,
                                 name=f"c{num}-connect").start()
        finally:
            self.shutdown()

    def open_target(self, num: int, c: socket.socket, peer: str, cuts: int) -> None:
        try:
            t = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
            t.settimeout(None)
        except OSError as e:
            with self.lock:
                self.connecting.discard(num)
                self.counters["connect_failures"] += 1
            self.log(f"conn {num}: from {peer}: connect to {self.target[0]}:{self.target[1]} failed: {e}")
            try:
                c.close()
            except OSError:
                pass
            return
        for s in (c, t):
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = Conn(self, num, c, t, peer)
        with self.lock:
            self.connecting.discard(num)
            if self.stopping.is_set() or self.cuts != cuts:
                conn.close("stopping" if self.stopping.is_set() else "cut while connecting to the target")
                return
            self.conns[num] = conn
        self.log(f"conn {num}: from {peer} to {self.target[0]}:{self.target[1]}")
        conn.start()

    def cut(self, rst: bool) -> int:
        """Closes the current connections, and those still connecting to
        the target once they are; returns how many."""
        with self.lock:
            self.cuts += 1
            conns = list(self.conns.values())
            connecting = len(self.connecting)
        for c in conns:
            c.close("cut" + (" (RST)" if rst else ""), rst=rst)
        return len(conns) + connecting

    def up_conn(self, frames: int, timeout: float) -> "Conn | None":
        """The first connection that has carried `frames` frames each way,
        within `timeout` seconds (None: none, or told to stop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.flap_stop.is_set() and not self.stopping.is_set():
            with self.lock:
                for c in self.conns.values():
                    if not c.closed and min(p.frames for p in c.pipes) >= frames:
                        return c
            time.sleep(POLL / 5)
        return None

    def flapper(self, n: int, lo: int, hi: int, frames: int) -> None:
        t_cut = None
        for i in range(n + 1):
            c = self.up_conn(frames, self.flap_recovery)
            if c is None:
                with self.lock:
                    stopped = self.flap_stop.is_set() or self.stopping.is_set()
                    self.flap_state = "no" if stopped else "failed"
                self.log(f"flaps end: {self.flap_done} of {n} done, " +
                         ("stopped" if stopped else f"{'flap ' + str(i) if i else 'the first link'}: no connection "
                          f"up (carrying {frames} frames each way) within {self.flap_recovery:g}s"))
                return
            if t_cut is not None:
                with self.lock:
                    self.flap_done = i
                self.log(f"flap {i} of {n}: up again after {time.monotonic() - t_cut:.2f} s (conn {c.num})")
            if i == n:
                break
            if self.flap_stop.wait(self.rnd.uniform(lo, hi) / 1000.0):
                continue  # up_conn sees the stop
            with self.lock:
                self.counters["cuts"] += 1
            t_cut = time.monotonic()
            self.log(f"flap {i + 1} of {n}: cut conn {c.num} after {frames}+ frames each way: "
                     f"{self.cut(False)} connections")
        with self.lock:
            self.flap_state = "no"
        self.log(f"flaps end: {n} of {n} done")

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        self.stopping.set()
        self.cut(False)
        for s in (self.lsock, self.csock):
            try:
                s.close()
            except OSError:
                pass
        try:
            os.unlink(self.control_path)
        except OSError:
            pass
        self.log("stopped")

    # -- control -----------------------------------------------------------

    def control_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if not select.select([self.csock], [], [], 0.2)[0]:
                    continue
                s, _ = self.csock.accept()
            except (OSError, ValueError):
                if self.stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            threading.Thread(target=self.control_client, args=(s,), daemon=True, name="control-client").start()

    def control_client(self, s: socket.socket) -> None:
        try:
            with s, s.makefile("rwb") as f:
                for line in f:
                    reply = self.command(line.decode("utf-8", "replace").strip())
                    f.write(reply.encode() + b"\n")
                    f.flush()
                    if self.stopping.is_set():
                        return
        except (OSError, ValueError):
            pass

    def dirs_of(self, word: str) -> list[str]:
        if word == "both":
            return list(self.dirs)
        if word in self.dirs:
            return [word]
        raise ValueError(f"direction {word!r}: expected {self.dirs[0]}, {self.dirs[1]} or both")

    def command(self, line: str) -> str:
        words = line.split()
        if not words:
            return "err empty command"
        try:
            reply = self.do(words[0].lower(), words[1:])
        except (ValueError, IndexError) as e:
            self.log(f"command {line!r}: error: {e}")
            return f"err {e}"
        if words[0].lower() != "stats":
            self.log(f"command {line!r}: {reply}")
        return reply

    def do(self, cmd: str, args: list[str]) -> str:
        def nargs(lo: int, hi: int) -> None:
            if not lo <= len(args) <= hi:
                raise ValueError(f"{cmd}: expected {lo}..{hi} arguments, got {len(args)}")

        def number(s: str) -> int:
            if not s.isdigit():
                raise ValueError(f"{cmd}: {s!r} is not a non-negative integer")
            return int(s)

        with self.lock:
            if cmd == "pass":
                nargs(0, 0)
                dropped = sum(len(q) for q in self.ops.values()) + len(self.carry)
                for q in self.ops.values():
                    q.clear()
                self.carry.clear()
                for conn in self.conns.values():
                    for p in conn.pipes:
                        if p.hold_op is not None:
                            # Gathering its frame: the frame goes on unchanged.
                            p.hold_op = None
                            dropped += 1
                for d in self.dirs:
                    self.delay[d] = 0
                self.stalled.clear()
                self.refuse = False
                self.change.notify_all()
                return f"ok pass ({dropped} queued faults dropped)"
            if cmd == "delay":
                nargs(1, 2)
                dirs = self.dirs_of(args[0]) if len(args) == 2 else list(self.dirs)
                ms = number(args[-1])
                for d in dirs:
                    self.delay[d] = ms
                return f"ok delay {ms} ms {'+'.join(dirs)}"
            if cmd == "reorder":
                nargs(1, 1)
                made = []
                for d in self.dirs_of(args[0]):
                    o = Op("reorder", "frame")
                    self.ops[d].append(o)
                    made.append(f"{d} {o}")
                return "ok queued " + ", ".join(made)
            if cmd in ("drop", "dup", "truncate", "corrupt"):
                nargs(1, 2)
                dirs = self.dirs_of(args[0])
                arg = args[1] if len(args) > 1 else ""
                if cmd == "drop":
                    nargs(2, 2)
                    op = (lambda: Op("drop", "frame")) if arg == "frame" else \
                        (lambda n=number(arg): Op("drop", n=n))
                elif cmd == "dup":
                    if arg not in ("", "frame"):
                        raise ValueError("dup: expected DIR [frame]")
                    op = lambda: Op("dup", "frame" if arg else "chunk")
                elif cmd == "truncate":
                    nargs(2, 2)
                    op = lambda n=number(arg): Op("truncate", n=n)
                else:
                    where = arg or "any"
                    if where not in ("any", "header", "payload"):
                        raise ValueError("corrupt: expected DIR [any|header|payload]")
                    op = lambda: Op("corrupt", "chunk" if where == "any" else "frame", where=where)
                made = []
                for d in dirs:
                    o = op()
                    self.ops[d].append(o)
                    made.append(f"{d} {o}")
                return "ok queued " + ", ".join(made)
            if cmd == "stall":
                nargs(1, 1)
                dirs = self.dirs_of(args[0])
                self.stalled.update(dirs)
                self.counters["stalls"] += 1
                return f"ok stalled {'+'.join(dirs)}"
            if cmd == "unstall":
                nargs(0, 1)
                dirs = self.dirs_of(args[0]) if args else list(self.dirs)
                self.stalled.difference_update(dirs)
                self.change.notify_all()
                return f"ok reading {'+'.join(dirs)}"
            if cmd == "refuse":
                nargs(1, 1)
                if args[0] not in ("on", "off"):
                    raise ValueError("refuse: expected on or off")
                self.refuse = args[0] == "on"
                return f"ok refuse {args[0]}"
            if cmd == "stats":
                nargs(0, 0)
                return "ok " + self.stats()
            if cmd == "flaps":
                nargs(1, 4)
                if args == ["stop"]:
                    self.flap_stop.set()
                    return "ok stopping the flaps"
                nargs(3, 4)
                n, lo, hi = number(args[0]), number(args[1]), number(args[2])
                frames = number(args[3]) if len(args) == 4 else 5
                if lo > hi or n == 0 or frames == 0:
                    raise ValueError("flaps: expected N > 0, MIN <= MAX, F > 0")
                if self.flap_state == "yes":
                    raise ValueError("flaps: already flapping (flaps stop first)")
                self.flap_stop = threading.Event()
                self.flap_plan, self.flap_done, self.flap_state = n, 0, "yes"
                threading.Thread(target=self.flapper, args=(n, lo, hi, frames), daemon=True,
                                 name="flapper").start()
                return f"ok flapping {n} times, up {lo}..{hi} ms each"
            if cmd == "quit":
                nargs(0, 0)
                self.stop()
                return "ok quitting"
            if cmd == "help":
                return "ok pass|delay [DIR] MS|drop DIR N|drop DIR frame|dup DIR [frame]|truncate DIR N|" \
                       "corrupt DIR [any|header|payload]|reorder DIR|stall DIR|unstall [DIR]|cut [rst]|refuse on|off|" \
                       "flaps N MIN MAX [F]|flaps stop|stats|quit"
        if cmd == "cut":
            nargs(0, 1)
            if args and args[0] != "rst":
                raise ValueError("cut: expected no argument or rst")
            n = self.cut(bool(args))
            with self.lock:
                self.counters["cuts"] += 1
            return f"ok cut {n} connections"
        raise ValueError(f"unknown command {cmd!r}")

    def stats(self) -> str:
        c = self.counters
        pending = sum(len(q) for q in self.ops.values()) + len(self.carry) + \
            sum(1 for conn in self.conns.values() for p in conn.pipes if p.hold_op is not None)
        kinds = " ".join(f"{k}={c[k]}" for k in ("drop", "dup", "truncate", "corrupt", "reorder"))
        return (f"conns={c['conns']} active={len(self.conns)} refused={c['refused']} "
                f"connect_failures={c['connect_failures']} {self.dirs[0]}={c[self.dirs[0]]} "
                f"{self.dirs[1]}={c[self.dirs[1]]} faults={c['faults']} pending={pending} {kinds} "
                f"cuts={c['cuts']} stalls={c['stalls']} stalled={'+'.join(sorted(self.stalled)) or '-'} "
                f"delay={self.delay[self.dirs[0]]},{self.delay[self.dirs[1]]} "
                f"refuse={'on' if self.refuse else 'off'} flaps={self.flap_done}/{self.flap_plan} "
                f"flapping={self.flap_state}")


def control(path: str, line: str, timeout: float = 10.0) -> str:
    """Sends one command to a running proxy; returns its reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode("utf-8", "replace").strip()


# -- self-test ----------------------------------------------------------------

class SelfTest:
    """Checks every command against a target and a client the test owns, so
    that each side's view is seen exactly."""

    def __init__(self) -> None:
        import io
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix="linkfault-")
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.logbuf = io.StringIO()
        self.target = socket.create_server(("127.0.0.1", 0))
        self.target.settimeout(3)
        self.proxy = Proxy(("127.0.0.1", 0), self.target.getsockname(), f"{self.tmp}/ctl.sock",
                           names=("a", "b"), seed=1, log=self.logbuf)
        threading.excepthook = lambda a: self.errors.append(f"{a.thread.name}: {a.exc_type.__name__}: {a.exc_value}")
        self.thread = threading.Thread(target=self.proxy.serve, daemon=True)
        self.thread.start()
        self.rnd = random.Random(2)

    # helpers
    def ctl(self, line: str) -> str:
        r = control(self.proxy.control_path, line)
        assert r.startswith("ok"), (line, r)
        return r

    def stats(self) -> dict[str, str]:
        return dict(kv.split("=", 1) for kv in self.ctl("stats")[3:].split())

    def pair(self) -> tuple[socket.socket, socket.socket]:
        """A client connected through the proxy and the target's end, once
        the proxy forwards between them."""
        # By number, not count: the connection of the check's previous
        # pair may leave the proxy's table while this one enters it.
        before = set(self.proxy.conns)
        c = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=3)
        s, _ = self.target.accept()
        deadline = time.monotonic() + 3
        while not set(self.proxy.conns) - before:
            assert time.monotonic() < deadline, "the proxy never forwarded the connection"
            time.sleep(0.005)
        for x in (c, s):
            x.settimeout(3)
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c, s

    @staticmethod
    def recv_n(s: socket.socket, n: int, timeout: float = 3) -> bytes:
        s.settimeout(timeout)
        buf = bytearray()
        while len(buf) < n:
            chunk = s.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    @staticmethod
    def recv_idle(s: socket.socket, idle: float = 0.3) -> bytes:
        """Everything until nothing came for `idle` seconds (or EOF)."""
        buf = bytearray()
        s.settimeout(idle)
        while True:
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                return bytes(buf)
            if not chunk:
                return bytes(buf)
            buf += chunk

    @staticmethod
    def eof(s: socket.socket, timeout: float = 2) -> str:
        """'eof', 'reset' or 'open' (nothing within `timeout`), after
        reading away what was still in flight."""
        s.settimeout(timeout)
        try:
            while s.recv(65536):
                pass
            return "eof"
        except socket.timeout:
            return "open"
        except ConnectionResetError:
            return "reset"

    @staticmethod
    def frame(ty: int, payload: bytes, seq: int) -> bytes:
        f = MAGIC + struct.pack("<HHHHIQ", 3, ty, 0, 0, len(payload), seq) + payload
        return f + struct.pack("<I", crc32c(f))

    @staticmethod
    def sealed(f: bytes) -> bool:
        """Whether the trailer of frame `f` matches."""
        return struct.unpack_from("<I", f, len(f) - TRAILER)[0] == crc32c(f[:-TRAILER])

    def check(self, name: str, fn) -> None:
        try:
            # Each check starts with no connection left from the one before.
            deadline = time.monotonic() + 3
            while self.stats()["active"] != "0":
                assert time.monotonic() < deadline, f"connections left open: {self.stats()}"
                time.sleep(0.02)
            fn()
            self.passed.append(name)
        except Exception as e:  # noqa: BLE001 - report every failing check
            self.failed.append(f"{name}: {type(e).__name__}: {e}")
        finally:
            try:
                control(self.proxy.control_path, "pass")
            except OSError:
                pass

    # checks
    def t_pass(self) -> None:
        c, s = self.pair()
        up, down = self.rnd.randbytes(300_000), self.rnd.randbytes(300_000)
        got = {}
        th = threading.Thread(target=lambda: got.setdefault("s", self.recv_n(s, len(up))))
        th.start()
        c.sendall(up)
        s.sendall(down)
        got["c"] = self.recv_n(c, len(down))
        th.join()
        assert got["s"] == up and got["c"] == down
        c.close()
        assert self.eof(s) == "eof"
        s.close()

    def latency(self, a: socket.socket, b: socket.socket) -> float:
        t0 = time.monotonic()
        a.sendall(b"ping")
        assert self.recv_n(b, 4) == b"ping"
        return time.monotonic() - t0

    def t_delay(self) -> None:
        # Bounds are loose: the host may be busy (with guests, say).
        c, s = self.pair()
        base = self.latency(c, s)
        self.ctl("delay 300")
        ab, ba = self.latency(c, s), self.latency(s, c)
        assert 0.29 <= ab < 1.5 and 0.29 <= ba < 1.5, (base, ab, ba)
        # Pipelined: 10 messages 30 ms apart arrive in about 300 + 270 ms,
        # not 10 x 300.
        t0 = time.monotonic()
        for i in range(10):
            c.sendall(bytes([i]) * 10)
            time.sleep(0.03)
        assert self.recv_n(s, 100) == b"".join(bytes([i]) * 10 for i in range(10))
        took = time.monotonic() - t0
        assert 0.55 <= took < 2.0, took
        self.ctl("delay b2a 0")
        ab, ba = self.latency(c, s), self.latency(s, c)
        assert ab >= 0.29 and ba < 0.25, (ab, ba)
        self.ctl("pass")
        assert self.latency(c, s) < 0.25
        c.close()
        s.close()

    def t_drop_bytes(self) -> None:
        c, s = self.pair()
        data = self.rnd.randbytes(1000)
        self.ctl("drop a2b 100")
        c.sendall(data[:60])          # the drop spans two chunks
        time.sleep(0.1)
        c.sendall(data[60:])
        assert self.recv_n(s, 900) == data[100:]
        self.ctl("drop b2a 7")
        s.sendall(b"0123456789abcdef")
        assert self.recv_n(c, 9) == b"789abcdef"
        c.sendall(b"after")            # one-shot
        assert self.recv_n(s, 5) == b"after"
        assert self.recv_idle(s, 0.2) == b""
        st = self.stats()
        assert st["drop"] == "2" and st["pending"] == "0", st
        c.close()
        s.close()

    def t_dup_chunk(self) -> None:
        c, s = self.pair()
        self.ctl("dup a2b")
        c.sendall(b"x" * 40)
        assert self.recv_idle(s) == b"x" * 80
        c.sendall(b"y" * 40)
        assert self.recv_idle(s) == b"y" * 40
        c.close()
        s.close()

    def t_truncate(self) -> None:
        c, s = self.pair()
        c.sendall(b"hello")
        assert self.recv_n(s, 5) == b"hello"
        self.ctl("truncate b2a 5")
        s.sendall(b"z" * 100)
        assert self.recv_idle(c, 1.0) == b"z" * 5
        assert self.eof(c) in ("eof", "reset") and self.eof(s) in ("eof", "reset")
        c.close()
        s.close()

    def t_corrupt_chunk(self) -> None:
        c, s = self.pair()
        data = self.rnd.randbytes(64)
        self.ctl("corrupt a2b")
        c.sendall(data)
        got = self.recv_n(s, 64)
        diff = [i for i in range(64) if got[i] != data[i]]
        assert len(diff) == 1 and diff[0] >= 16, diff
        c.sendall(data)
        assert self.recv_n(s, 64) == data
        c.close()
        s.close()

    def framed_pair(self):
        c, s = self.pair()
        f0c, f0s = self.frame(0x20, b"\0" * 8, 0), self.frame(0x20, b"\1" * 8, 0)
        c.sendall(f0c)
        s.sendall(f0s)
        assert self.recv_n(s, len(f0c)) == f0c and self.recv_n(c, len(f0s)) == f0s
        return c, s

    def t_frames(self) -> None:
        c, s = self.framed_pair()
        f = [self.frame(0x121, self.rnd.randbytes(self.rnd.randint(9, 3000)), i) for i in range(1, 8)]
        # drop a2b frame: the next frame goes, the one after it arrives.
        self.ctl("drop a2b frame")
        c.sendall(f[0] + f[1])
        assert self.recv_idle(s) == f[1]
        # dup b2a frame, the frame sent in three pieces (its header split).
        self.ctl("dup b2a frame")
        s.sendall(f[2][:10])
        time.sleep(0.1)
        s.sendall(f[2][10:30])
        time.sleep(0.1)
        s.sendall(f[2][30:] + f[3])
        assert self.recv_idle(c) == f[2] + f[2] + f[3]
        c.sendall(f[4])                  # one-shot
        assert self.recv_idle(s) == f[4]
        c.close()
        s.close()

    def t_frame_split(self) -> None:
        c, s = self.framed_pair()
        f = [self.frame(0x121, self.rnd.randbytes(2000), i) for i in range(1, 4)]
        self.ctl("drop a2b frame")
        c.sendall(f[0][:5])
        time.sleep(0.1)
        c.sendall(f[0][5:] + f[1][:100])
        time.sleep(0.1)
        c.sendall(f[1][100:] + f[2])
        assert self.recv_idle(s) == f[1] + f[2]
        # A frame fault queued in the middle of a frame hits the next one.
        c.sendall(f[0][:1000])
        assert self.recv_n(s, 1000) == f[0][:1000]
        self.ctl("drop a2b frame")
        c.sendall(f[0][1000:] + f[1])
        assert self.recv_idle(s) == f[0][1000:]
        # `pass` cancels a frame fault that is gathering its frame.
        self.ctl("drop a2b frame")
        c.sendall(f[2][:5])
        time.sleep(0.1)
        assert self.stats()["pending"] == "1"
        assert self.ctl("pass") == "ok pass (1 queued faults dropped)"
        c.sendall(f[2][5:])
        assert self.recv_idle(s) == f[2]
        c.close()
        s.close()

    def t_corrupt_frames(self) -> None:
        n0 = int(self.stats()["corrupt"])
        c, s = self.framed_pair()
        for _ in range(5):
            f = self.frame(0x100, self.rnd.randbytes(116), 1)
            self.ctl("corrupt a2b header")
            c.sendall(f)
            got = self.recv_n(s, len(f))
            diff = [i for i in range(len(f)) if got[i] != f[i]]
            assert len(diff) == 1 and diff[0] in HEADER_CHECKED, diff
        # A frame without payload is passed over; one byte of the next
        # frame's payload (not of its trailer) changes, and its checksum no
        # longer matches.
        empty, full = self.frame(0x11, b"", 1), self.frame(0x121, self.rnd.randbytes(100), 2)
        assert self.sealed(empty) and self.sealed(full)
        self.ctl("corrupt b2a payload")
        s.sendall(empty + full)
        got = self.recv_n(c, len(empty) + len(full))
        want = empty + full
        diff = [i for i in range(len(want)) if got[i] != want[i]]
        assert len(diff) == 1 and len(empty) + HEADER <= diff[0] < len(want) - TRAILER, diff
        assert got[:len(empty)] == empty and not self.sealed(got[len(empty):])
        st = self.stats()
        assert st["pending"] == "0" and int(st["corrupt"]) == n0 + 6, st
        c.close()
        s.close()

    def t_random_chunking(self) -> None:
        """Frame faults against streams cut into random chunks (the reader's
        editing alone, without sockets): exactly the first frame that starts
        at or after the moment the fault was queued is dropped, doubled or
        has one checked header byte flipped; nothing else changes."""
        class FakeConn:
            closed, num = False, 0
        rnd = random.Random(3)
        px = Proxy.__new__(Proxy)
        px.lock, px.rnd, px.counters = threading.RLock(), random.Random(4), collections.Counter()
        px.log = lambda msg: None
        for trial in range(300):
            frames = [self.frame(0x121, rnd.randbytes(rnd.choice([0, 8, 100, 3000])), i) for i in range(20)]
            stream = b"".join(frames)
            cuts = sorted(rnd.sample(range(1, len(stream)), rnd.randint(1, 40)))
            chunks = [stream[x:y] for x, y in zip([0] + cuts, cuts + [len(stream)])]
            px.ops, px.carry = {"a2b": collections.deque()}, {}
            conn = FakeConn()
            conn.proxy = px
            pipe = Pipe(conn, "a2b", None, None)
            k, kind = rnd.randrange(len(chunks)), rnd.choice(["drop", "dup", "corrupt"])
            out, pos, armed = b"", 0, 0
            for i, chunk in enumerate(chunks):
                if i == k:
                    armed = pos
                    px.ops["a2b"].append(Op(kind, "frame", where="header"))
                pieces, _ = pipe.edit(chunk)
                out += b"".join(pieces)
                pos += len(chunk)
            offsets = [sum(len(f) for f in frames[:j]) for j in range(len(frames))]
            hit = next((j for j, o in enumerate(offsets) if o >= armed), None)
            if hit is None:
                # No frame starts after the fault was queued: it stays queued.
                assert out == stream and len(px.ops["a2b"]) == 1, trial
                continue
            start, n = offsets[hit], len(frames[hit])
            if kind == "drop":
                assert out == stream[:start] + stream[start + n:], trial
            elif kind == "dup":
                assert out == stream[:start + n] + stream[start:start + n] + stream[start + n:], trial
            else:
                diff = [i for i in range(len(stream)) if out[i] != stream[i]]
                assert len(out) == len(stream) and len(diff) == 1 and diff[0] - start in HEADER_CHECKED, trial

    def t_unframed(self) -> None:
        c, s = self.pair()
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert self.recv_n(s, 18) == b"GET / HTTP/1.0\r\n\r\n"
        self.ctl("drop a2b frame")
        c.sendall(b"x" * 100)
        assert self.recv_idle(s) == b"x" * 100
        assert self.stats()["pending"] == "0"
        assert "not framed: fault dropped" in self.logbuf.getvalue()
        c.close()
        s.close()

    def t_stall(self) -> None:
        c, s = self.pair()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        total = 16 << 20
        data = self.rnd.randbytes(1 << 20) * 16
        sent = [0]
        self.ctl("stall a2b")
        c.setblocking(False)            # c is only polled from here on, never given a timeout

        def writer():
            view = memoryview(data)
            while sent[0] < total:
                select.select([], [c], [], 0.2)
                try:
                    sent[0] += c.send(view[sent[0]:sent[0] + 262144])
                except BlockingIOError:
                    pass
                except OSError:
                    return
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        time.sleep(1.5)
        n0 = sent[0]
        assert self.recv_idle(s, 0.5) == b"", "bytes got through a stalled direction"
        # The sender is blocked: its buffers are full and nothing moves.
        assert sent[0] == n0 and 0 < n0 < total, (n0, sent[0])
        # The other direction still flows.
        s.sendall(b"pong")
        assert select.select([c], [], [], 3)[0] and c.recv(4) == b"pong"
        self.ctl("pass")
        got = self.recv_n(s, total, timeout=20)
        th.join(10)
        assert got == data, (len(got), total)
        # unstall of one direction
        c.setblocking(True)
        self.ctl("stall b2a")
        s.sendall(b"held")
        assert self.recv_idle(c, 0.5) == b""
        self.ctl("unstall b2a")
        assert self.recv_n(c, 4) == b"held"
        c.close()
        s.close()

    def t_reorder(self) -> None:
        c, s = self.framed_pair()
        f = [self.frame(0x121, self.rnd.randbytes(500 + 700 * i), i) for i in range(1, 4)]
        self.ctl("reorder a2b")
        c.sendall(f[0])
        assert self.eof(s) == "eof" and self.eof(c) == "eof"
        assert self.stats()["pending"] == "1", self.stats()
        # The next connection: its first frame goes as sent, the taken one
        # follows it (here in the same chunk as its second frame), then
        # the rest.
        c2, s2 = self.pair()
        f0 = self.frame(0x20, b"\2" * 8, 0)
        c2.sendall(f0)
        assert self.recv_n(s2, len(f0)) == f0
        c2.sendall(f[1][:9])
        time.sleep(0.1)
        c2.sendall(f[1][9:] + f[2])
        assert self.recv_idle(s2) == f[0] + f[1] + f[2]
        st = self.stats()
        assert st["reorder"] == "1" and st["pending"] == "0", st
        # b2a: the new connection's first frame split over two chunks.
        c2.close()
        s2.close()
        c3, s3 = self.framed_pair()
        self.ctl("reorder b2a")
        s3.sendall(f[1])
        assert self.eof(c3) == "eof"
        c4, s4 = self.pair()
        f0 = self.frame(0x20, b"\3" * 8, 0)
        s4.sendall(f0[:20])
        time.sleep(0.1)
        s4.sendall(f0[20:] + f[2][:30])
        time.sleep(0.1)
        s4.sendall(f[2][30:])
        assert self.recv_idle(c4) == f0 + f[1] + f[2]
        for x in (c, s, c3, s3, c4, s4):
            x.close()

    def t_cut(self) -> None:
        c, s = self.pair()
        r = self.ctl("cut")
        assert r == "ok cut 1 connections", r
        assert self.eof(c) == "eof" and self.eof(s) == "eof"
        c2, s2 = self.pair()
        c2.sendall(b"again")
        assert self.recv_n(s2, 5) == b"again"
        self.ctl("cut rst")
        assert self.eof(c2) == "reset" and self.eof(s2) == "reset"
        for x in (c, s, c2, s2):
            x.close()

    def t_flaps(self) -> None:
        """A client that reconnects at once and a target that answers, each
        sending 6 frames per connection: 3 flaps, each up again."""
        stop = threading.Event()
        accepted = []

        def talk(x: socket.socket, tag: bytes) -> None:
            with x:
                try:
                    for k in range(6):
                        x.sendall(self.frame(0x121, tag, k))
                    x.settimeout(0.1)
                    while not stop.is_set():
                        try:
                            if not x.recv(65536):
                                return
                        except socket.timeout:
                            pass
                except OSError:
                    pass

        def client() -> None:
            while not stop.is_set():
                try:
                    c = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=3)
                except OSError:
                    time.sleep(0.05)
                    continue
                talk(c, b"c")

        def target() -> None:
            while not stop.is_set():
                try:
                    s, _ = self.target.accept()
                except socket.timeout:
                    continue
                accepted.append(s)
                threading.Thread(target=talk, args=(s, b"t"), daemon=True).start()

        self.target.settimeout(0.1)
        threads = [threading.Thread(target=f, daemon=True) for f in (client, target)]
        for t in threads:
            t.start()
        try:
            for bad in ("flaps", "flaps 0 1 2", "flaps 2 9 1", "flaps 1 1 1 0", "flaps x 1 2", "flaps 1 2 3 4 5"):
                r = control(self.proxy.control_path, bad)
                assert r.startswith("err"), (bad, r)
            n0 = self.logbuf.getvalue().count(" up again after ")
            r = self.ctl("flaps 3 20 60")
            assert r == "ok flapping 3 times, up 20..60 ms each", r
            assert control(self.proxy.control_path, "flaps 1 1 1").startswith("err"), "a second run at once"
            deadline = time.monotonic() + 15
            while (st := self.stats())["flapping"] == "yes":
                assert time.monotonic() < deadline, st
                time.sleep(0.02)
            assert st["flapping"] == "no" and st["flaps"] == "3/3", st
            assert self.logbuf.getvalue().count(" up again after ") - n0 == 3, self.logbuf.getvalue()[-1500:]
            assert len(accepted) == 4, len(accepted)
            # A link that never carries enough frames fails the run.
            self.proxy.flap_recovery = 0.5
            self.ctl("flaps 1 10 10 100")
            deadline = time.monotonic() + 5
            while (st := self.stats())["flapping"] == "yes":
                assert time.monotonic() < deadline, st
                time.sleep(0.02)
            assert st["flapping"] == "failed" and st["flaps"] == "0/1", st
            # `flaps stop` ends a run.
            self.proxy.flap_recovery = FLAP_RECOVERY_S
            self.ctl("flaps 50 2000 2000")
            time.sleep(0.2)
            self.ctl("flaps stop")
            deadline = time.monotonic() + 5
            while (st := self.stats())["flapping"] == "yes":
                assert time.monotonic() < deadline, st
                time.sleep(0.02)
            assert st["flapping"] == "no" and st["flaps"] == "0/50", st
        finally:
            stop.set()
            for t in threads:
                t.join(3)
            self.target.settimeout(3)
            self.proxy.flap_recovery = FLAP_RECOVERY_S
            self.proxy.cut(False)

    def t_refuse(self) -> None:
        c, s = self.pair()
        self.ctl("refuse on")
        n = int(self.stats()["refused"])
        x = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=3)
        assert self.eof(x, 1) in ("eof", "reset")
        x.close()
        self.target.settimeout(0.5)
        try:
            self.target.accept()
            raise AssertionError("a refused connection reached the target")
        except socket.timeout:
            pass
        finally:
            self.target.settimeout(3)
        assert int(self.stats()["refused"]) == n + 1
        c.sendall(b"still")            # the current connection stays
        assert self.recv_n(s, 5) == b"still"
        self.ctl("refuse off")
        c2, s2 = self.pair()
        c2.sendall(b"back")
        assert self.recv_n(s2, 4) == b"back"
        for y in (c, s, c2, s2):
            y.close()

    def t_peer_reset(self) -> None:
        c, s = self.pair()
        c.sendall(b"q" * 10000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        assert self.eof(s) in ("eof", "reset")
        s.close()
        c2, s2 = self.pair()
        c2.sendall(b"fine")
        assert self.recv_n(s2, 4) == b"fine"
        s2.close()
        assert self.eof(c2) == "eof"
        c2.close()

    def t_bad_commands(self) -> None:
        for line in ("bogus", "drop x2y 5", "drop a2b", "delay -1", "refuse maybe", "corrupt a2b middle",
                     "truncate both", "cut now", ""):
            r = control(self.proxy.control_path, line)
            assert r.startswith("err "), (line, r)
        assert control(self.proxy.control_path, "help").startswith("ok ")

    def t_stats(self) -> None:
        st0 = self.stats()
        c, s = self.pair()
        c.sendall(b"1" * 1000)
        self.recv_n(s, 1000)
        s.sendall(b"2" * 500)
        self.recv_n(c, 500)
        time.sleep(0.1)
        st = self.stats()
        assert int(st["conns"]) == int(st0["conns"]) + 1 and st["active"] == "1", st
        assert int(st["a2b"]) - int(st0["a2b"]) == 1000 and int(st["b2a"]) - int(st0["b2a"]) == 500, (st0, st)
        c.close()
        s.close()
        deadline = time.monotonic() + 2
        while self.stats()["active"] != "0":
            assert time.monotonic() < deadline, self.stats()
            time.sleep(0.05)

    def t_unreachable(self) -> None:
        dead = socket.create_server(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        dead.close()
        p = Proxy(("127.0.0.1", 0), ("127.0.0.1", port), f"{self.tmp}/ctl2.sock", log=self.logbuf)
        th = threading.Thread(target=p.serve, daemon=True)
        th.start()
        x = socket.create_connection(("127.0.0.1", p.port), timeout=3)
        assert self.eof(x, 3) in ("eof", "reset")
        x.close()
        assert control(p.control_path, "quit") == "ok quitting"
        th.join(3)
        assert not th.is_alive() and not os.path.exists(p.control_path)
        assert "failed" in self.logbuf.getvalue()

    def t_cli(self) -> None:
        import subprocess
        free = socket.create_server(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        path = f"{self.tmp}/cli.sock"
        me = os.path.abspath(__file__)
        p = subprocess.Popen([sys.executable, me, "--listen", f"127.0.0.1:{port}",
                              "--to", "127.0.0.1:%d" % self.target.getsockname()[1], "--control", path,
                              "--names", "b,a"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(path):
                assert time.monotonic() < deadline and p.poll() is None, "the proxy did not start"
                time.sleep(0.05)

            def run(*words):
                return subprocess.run([sys.executable, me, "--control", path, *words],
                                      capture_output=True, text=True, timeout=10)
            x = socket.create_connection(("127.0.0.1", port), timeout=3)
            y, _ = self.target.accept()
            r = run("drop", "b2a", "3")
            assert r.returncode == 0 and r.stdout.startswith("ok queued b2a"), r
            x.sendall(b"abcdef")
            assert self.recv_n(y, 3) == b"def"
            r = run("stats")
            assert r.returncode == 0 and " b2a=3 " in r.stdout and "drop=1" in r.stdout, r
            r = run("drop", "a2x", "3")
            assert r.returncode == 1 and r.stdout.startswith("err "), r
            x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            x.close()
            y.close()
            r = run("quit")
            assert r.returncode == 0, r
            assert p.wait(5) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        err = p.stderr.read().decode()
        p.stderr.close()
        assert "Traceback" not in err, err
        lines = err.splitlines()
        assert lines and all(len(ln) > 13 and ln[2] == ":" and ln[8] == "." and " linkfault: " in ln
                             for ln in lines), err
        assert not os.path.exists(path)

    def run(self) -> int:
        t0 = time.monotonic()
        for name in ("pass", "delay", "drop_bytes", "dup_chunk", "truncate", "corrupt_chunk", "frames",
                     "frame_split", "corrupt_frames", "random_chunking", "unframed", "stall", "reorder", "cut", "flaps",
                     "refuse",
                     "peer_reset", "bad_commands", "stats", "unreachable", "cli"):
            self.check(name, getattr(self, f"t_{name}"))
        self.proxy.stop()
        self.thread.join(3)
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)
        log = self.logbuf.getvalue()
        if "Traceback" in log or "internal error" in log:
            self.failed.append("log: " + log[-2000:])
        if self.errors:
            self.failed.append("thread exceptions: " + "; ".join(self.errors))
        for f in self.failed:
            print(f"linkfault self-test: FAILED {f}", file=sys.stderr)
        if os.environ.get("LINKFAULT_VERBOSE"):
            sys.stderr.write(log)
        n = len(self.passed)
        if self.failed:
            print(f"linkfault self-test: {n} checks passed, {len(self.failed)} failed")
            return 1
        print(f"linkfault self-test: {n} checks passed ({time.monotonic() - t0:.1f}s)")
        return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=parse_addr, metavar="HOST:PORT")
    ap.add_argument("--to", type=parse_addr, metavar="HOST:PORT")
    ap.add_argument("--control", metavar="PATH", help="the control socket")
    ap.add_argument("--names", default="a,b", metavar="C,T",
                    help="names of the client and target sides (default a,b: a2b is client to target)")
    ap.add_argument("--seed", type=int, help="for the random offsets and bit flips")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("command", nargs="*", help="with --control alone: a command to send")
    a = ap.parse_args(argv)
    if a.self_test:
        return SelfTest().run()
    if not a.control:
        ap.error("--control is required")
    if a.listen is None and a.to is None:
        if not a.command:
            ap.error("a command, or --listen and --to")
        rc = 0
        for line in " ".join(a.command).split(";"):
            if not line.strip():
                continue
            try:
                reply = control(a.control, line.strip())
            except OSError as e:
                print(f"err cannot reach {a.control}: {e}")
                return 2
            print(reply)
            if not reply.startswith("ok"):
                rc = 1
        return rc
    if a.listen is None or a.to is None or a.command:
        ap.error("--listen and --to go together, without a command")
    names = tuple(a.names.split(","))
    if len(names) != 2 or not all(n.isalnum() for n in names) or names[0] == names[1]:
        ap.error("--names: two different alphanumeric names, e.g. b,a")
    try:
        proxy = Proxy(a.listen, a.to, a.control, names=names, seed=a.seed)
    except OSError as e:
        print(f"{now_text()} linkfault: cannot start: {e}", file=sys.stderr)
        return 1

    def term(signum, frame):
        proxy.log(f"signal {signum}: stopping")
        proxy.stop()
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    proxy.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
