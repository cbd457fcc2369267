#!/usr/bin/env python3
"""A rogue interlink peer that holds the key: HOST PORT KEY HA_MODE LUN_ID.
For each case it connects to a listening tcm_ha node, completes the
authenticated handshake and login as node 2 (Documentation/protocol.rst),
then sends what the case names: messages that do not belong on an
established link (replayed authentication, a second Login, a bad sequence
number, an undecodable message), messages for LUNs, tags and reservations
the node does not have, and proxy-mode IO against LUN LUN_ID (which the node
must hold as primary): a read, a write read back, a read past the end, and
write data out of order, and frames whose CRC32C trailer does not match.
It checks the node's answers (closed the link, or answered as expected and
still answers a Heartbeat) and the trailer of every frame the node sends,
and prints one JSON line: {"cases": n, "ok": n, "failed": [...]}."""
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

from wirecrc import crc32c

MAGIC = b"tcHA"
VERSION = 6
HEADER, TRAILER = 24, 4
HELLO, AUTH_RESPONSE, AUTH_RESULT, LOGIN, LOGIN_ACK = 0x0001, 0x0002, 0x0003, 0x0010, 0x0011
HEARTBEAT, HEARTBEAT_ACK, BYE = 0x0020, 0x0021, 0x0030
LUN_STATE, PR_END, PR_OUT, PR_OUT_DONE, UA_ALL = 0x0100, 0x0112, 0x0114, 0x0115, 0x0117
IO_REQ, IO_DATA, IO_DONE = 0x0120, 0x0121, 0x0122
ABORT_NEXUS, ABORT_DONE = 0x0119, 0x011A
ANSWER = 1 << 31
LABEL = b"tcm_ha interlink auth v1"


class Link:
    """One authenticated, logged-in connection as node 2 (the connector)."""

    def __init__(self, host: str, port: int, key: bytes, mode: int):
        for _ in range(100):
            try:
                self.s = socket.create_connection((host, port), timeout=5)
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            raise SystemExit("listener never accepted")
        self.seq = 0
        self.buf = b""
        nonce_c = os.urandom(32)
        self.send(HELLO, nonce_c + bytes([2]))
        ty, p = self.expect(HELLO)
        nonce_l, id_l = p[:32], p[32]
        ids = bytes([2, id_l])
        tag = lambda d: hmac.new(key, LABEL + bytes([d]) + nonce_c + nonce_l + ids, hashlib.sha256).digest()
        self.send(AUTH_RESPONSE, tag(1))
        _, r = self.expect(AUTH_RESULT)
        assert r == b"\x01", f"authentication refused: {r!r}"
        _, t = self.expect(AUTH_RESPONSE)
        assert hmac.compare_digest(t, tag(2)), "the node's tag does not verify"
        self.send(AUTH_RESULT, b"\x01")
        self.login = struct.pack("<HBBIIIIIQQ", VERSION, mode, 2, 262144, 256, 1024, 256, 2048, 0,
                                 int.from_bytes(os.urandom(8), "little"))
        self.send(LOGIN, self.login)
        self.expect(LOGIN)
        self.send(LOGIN_ACK, b"")
        self.expect(LOGIN_ACK)

    def send(self, ty: int, payload: bytes, seq: int | None = None, flip: int | None = None) -> None:
        """Sends a frame; with `flip`, that byte of the payload is changed
        after the trailer was computed (corrupted in transit)."""
        s = self.seq if seq is None else seq
        f = bytearray(MAGIC + struct.pack("<HHHHIQ", VERSION, ty, 0, 0, len(payload), s) + payload)
        f += struct.pack("<I", crc32c(f))
        if flip is not None:
            f[HEADER + flip] ^= 0x40
        self.s.sendall(f)
        self.seq += 1

    def recv(self, timeout: float) -> tuple[int, bytes] | None:
        """The next frame (type, payload); None on timeout; raises EOFError
        when the node closed the connection."""
        deadline = time.time() + timeout
        while True:
            if len(self.buf) >= HEADER:
                n = struct.unpack_from("<I", self.buf, 12)[0]
                end = HEADER + n
                if len(self.buf) >= end + TRAILER:
                    ty = struct.unpack_from("<H", self.buf, 6)[0]
                    crc = struct.unpack_from("<I", self.buf, end)[0]
                    assert crc == crc32c(self.buf[:end]), \
                        f"the node's frame type {ty:#06x} has trailer {crc:#010x}, not its CRC32C"
                    p, self.buf = self.buf[HEADER:end], self.buf[end + TRAILER:]
                    return ty, p
            left = deadline - time.time()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                d = self.s.recv(1 << 20)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError):
                raise EOFError
            if not d:
                raise EOFError
            self.buf += d

    def expect(self, want: int, timeout: float = 5, match=lambda p: True) -> tuple[int, bytes]:
        """The next frame of type `want` whose payload `match`es, skipping
        the node's inventory, heartbeats and PR snapshots."""
        end = time.time() + timeout
        while True:
            f = self.recv(max(0.0, end - time.time()))
            if f is None:
                raise TimeoutError(f"no frame {want:#06x}")
            if f[0] == HEARTBEAT:
                self.send(HEARTBEAT_ACK, f[1])
            if f[0] == want and match(f[1]):
                return f

    def alive(self) -> bool:
        """Whether the node still answers a heartbeat."""
        v = struct.pack("<Q", 0xC0FFEE + self.seq)
        try:
            self.send(HEARTBEAT, v)
            self.expect(HEARTBEAT_ACK, 3, lambda p: p == v)
            return True
        except (EOFError, TimeoutError, OSError):
            return False

    def closed(self, timeout: float = 5) -> bool:
        """Whether the node closes the connection (Bye first, perhaps)."""
        end = time.time() + timeout
        try:
            while time.time() < end:
                f = self.recv(max(0.0, end - time.time()))
                if f and f[0] == HEARTBEAT:
                    self.send(HEARTBEAT_ACK, f[1])
        except (EOFError, OSError):
            return True
        return False


def io_req(tag: int, lun: int, op: int, sector: int, length: int) -> bytes:
    return struct.pack("<IIBBHQI", tag, lun, op, 0, 0, sector, length)


def io_data(tag: int, off: int, data: bytes) -> bytes:
    return struct.pack("<II", tag, off) + data


def io_done_status(link: Link, tag: int) -> int:
    _, p = link.expect(IO_DONE, 10, lambda p: struct.unpack_from("<I", p)[0] == tag)
    return p[8]


def read_back(link: Link, tag: int, lun: int, sector: int, length: int) -> tuple[bytes, int]:
    """Sends a read; returns the data that came back and the IoDone status."""
    link.send(IO_REQ, io_req(tag, lun, 1, sector, length))
    got = b""
    end = time.time() + 10
    while time.time() < end:
        f = link.recv(max(0.0, end - time.time()))
        if f is None:
            continue
        ty, p = f
        if ty == HEARTBEAT:
            link.send(HEARTBEAT_ACK, p)
        elif ty == IO_DATA and struct.unpack_from("<I", p)[0] == tag | ANSWER:
            assert struct.unpack_from("<I", p, 4)[0] == len(got), "read data out of order"
            got += p[8:]
        elif ty == IO_DONE and struct.unpack_from("<I", p)[0] == tag:
            return got, p[8]
    raise TimeoutError("no IoDone for the read")


def cases(lun: int):
    """(name, action(link) -> ok)."""
    def closes(ty: int, payload: bytes, seq=None, flip=None):
        def act(l: Link) -> bool:
            try:
                l.send(ty, payload, seq, flip)
            except (BrokenPipeError, ConnectionResetError):
                # The node refused the frame from its header and closed
                # before the rest was sent (a 64 KiB payload): as wanted.
                return True
            return l.closed()
        return act

    def alive_after(ty: int, payload: bytes, answer=None):
        def act(l: Link) -> bool:
            l.send(ty, payload)
            if answer and not answer(l):
                return False
            return l.alive()
        return act

    def read_ok(l: Link) -> bool:
        data, st = read_back(l, 11, lun, 8, 12288)
        return st == 0 and len(data) == 12288 and l.alive()

    def write_then_read(l: Link) -> bool:
        pat = os.urandom(65536 + 4096)
        l.send(IO_REQ, io_req(12, lun, 2, 4096, len(pat)))
        l.send(IO_DATA, io_data(12, 0, pat[:65536]))
        l.send(IO_DATA, io_data(12, 65536, pat[65536:]))
        if io_done_status(l, 12) != 0:
            return False
        data, st = read_back(l, 13, lun, 4096, len(pat))
        return st == 0 and data == pat

    def out_of_order(l: Link) -> bool:
        l.send(IO_REQ, io_req(14, lun, 2, 300, 8192))
        l.send(IO_DATA, io_data(14, 4096, os.urandom(4096)))
        return io_done_status(l, 14) == 10 and l.alive()

    def past_end(l: Link) -> bool:
        _, st = read_back(l, 15, lun, (1 << 40), 4096)
        return st == 10 and l.alive()

    def zeroes_then_read(l: Link) -> bool:
        # Write zeroes (op 5, a sector count) over written data; reads back
        # zeroes.
        l.send(IO_REQ, io_req(16, lun, 2, 4096, 8192))
        l.send(IO_DATA, io_data(16, 0, os.urandom(8192)))
        if io_done_status(l, 16) != 0:
            return False
        l.send(IO_REQ, io_req(17, lun, 5, 4096, 16))
        if io_done_status(l, 17) != 0:
            return False
        data, st = read_back(l, 18, lun, 4096, 8192)
        return st == 0 and data == bytes(8192)

    def discard(l: Link) -> bool:
        # Deallocate (op 4): done, or not supported by the device (1).
        l.send(IO_REQ, io_req(19, lun, 4, 4096, 16))
        return io_done_status(l, 19) in (0, 1) and l.alive()

    def discard_past_end(l: Link) -> bool:
        l.send(IO_REQ, io_req(20, lun, 4, 1 << 40, 0xffffffff))
        return io_done_status(l, 20) == 10 and l.alive()

    def bad_write_data(l: Link) -> bool:
        # A write whose data is corrupted in transit: the node ends the link
        # before the data is used.
        l.send(IO_REQ, io_req(23, lun, 2, 8192, 4096))
        try:
            l.send(IO_DATA, io_data(23, 0, os.urandom(4096)), flip=8 + 1000)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return l.closed()

    lun_state = struct.pack("<IBBHIQ", 999, 1, 0, 0, 512, 2048) + b"x" * 64 + bytes(32)
    port = struct.pack("<BBH", 5, 0, 3) + bytes(16) + b"ini".ljust(224, b"\0")
    pr_out = struct.pack("<IIHBBQQ", 21, 999, 0x21, 0, 0, 0, 0xab) + port

    def abort(lun_id: int, token: int):
        # PREEMPT AND ABORT for a nexus of the node's: answered AbortDone
        # with the token even when refused (a LUN it does not have, or one
        # it is primary for: only the primary sends these).
        return alive_after(ABORT_NEXUS, struct.pack("<IIHH", lun_id, token, 0x11, 0) + port,
                           lambda l: l.expect(ABORT_DONE, 5, lambda p: p == struct.pack("<II", lun_id, token)) is not None)
    return [
        ("replayed_auth_response", closes(AUTH_RESPONSE, os.urandom(32))),
        ("second_hello", closes(HELLO, os.urandom(32) + b"\x02")),
        ("second_login", lambda l: closes(LOGIN, l.login)(l)),
        ("seq_replay", closes(HEARTBEAT, bytes(8), seq=0)),
        ("undecodable_lun_state", closes(LUN_STATE, struct.pack("<IBBHIQ", 999, 7, 0, 0, 512, 1) + bytes(96))),
        ("oversized_io_data", closes(IO_DATA, io_data(1, 0, bytes(65537)))),
        ("lun_unknown_here", alive_after(LUN_STATE, lun_state)),
        ("pr_end_without_begin", alive_after(PR_END, struct.pack("<II", 999, 1))),
        ("ua_for_unknown_lun", alive_after(UA_ALL, struct.pack("<IBBH", 999, 0x29, 0, 0))),
        ("pr_out_for_unknown_lun", alive_after(PR_OUT, pr_out, lambda l: l.expect(
            PR_OUT_DONE, 5, lambda p: struct.unpack_from("<I", p)[0] == 21)[1][8:12] == b"\x02\x02\x04\x0a")),
        ("abort_for_unknown_lun", abort(999, 7)),
        ("abort_from_the_secondary", abort(lun, 8)),
        ("abort_done_for_unknown_lun", alive_after(ABORT_DONE, struct.pack("<II", 999, 9))),
        ("abort_nexus_bad_reserved", closes(ABORT_NEXUS, struct.pack("<IIHH", lun, 1, 0x11, 1) + port)),
        ("io_done_for_no_request", alive_after(IO_DONE, struct.pack("<IIB3x", 77, lun, 0))),
        ("io_data_for_no_request", alive_after(IO_DATA, io_data(78, 0, b"z" * 512))),
        ("io_read_data_for_no_request", alive_after(IO_DATA, io_data(79 | ANSWER, 0, b"z" * 512))),
        ("io_for_unknown_lun", alive_after(IO_REQ, io_req(80, 999, 1, 0, 4096),
                                           lambda l: io_done_status(l, 80) == 0x80)),
        ("io_read", read_ok),
        ("io_write_read_back", write_then_read),
        ("io_write_data_out_of_order", out_of_order),
        ("io_read_past_the_end", past_end),
        ("io_write_zeroes_read_back", zeroes_then_read),
        ("io_discard", discard),
        ("io_discard_past_the_end", discard_past_end),
        ("io_req_unknown_op", closes(IO_REQ, io_req(21, lun, 7, 0, 8))),
        ("io_req_empty_range", closes(IO_REQ, io_req(22, lun, 4, 0, 0))),
        # A bit flipped in transit: caught by the trailer, the link ends.
        ("bad_checksum_heartbeat", closes(HEARTBEAT, bytes(8), flip=3)),
        ("bad_checksum_write_data", bad_write_data),
    ]


def main() -> None:
    host, port, key, mode, lun = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4]), \
        int(sys.argv[5])
    failed = []
    all_cases = cases(lun)
    for name, act in all_cases:
        try:
            link = Link(host, port, key, mode)
        except (AssertionError, TimeoutError, EOFError, OSError) as e:
            failed.append(f"{name}: login: {e}")
            continue
        try:
            if not act(link):
                failed.append(name)
        except (AssertionError, TimeoutError, EOFError, OSError) as e:
            failed.append(f"{name}: {type(e).__name__} {e}")
        finally:
            link.s.close()
        # The listener pauses after a failed connection; a clean close of a
        # logged-in link lets it take the next one at once.
        time.sleep(0.2)
    print(json.dumps({"cases": len(all_cases), "ok": len(all_cases) - len(failed), "failed": failed}))


if __name__ == "__main__":
    main()
