#!/usr/bin/env python3
"""A hostile interlink peer, run in a guest against a listening tcm_ha node:
HOST PORT CASES SEED. Each case is one TCP connection carrying one kind of
bad input before authentication; the script waits for the node to close the
connection and prints a JSON summary (cases per kind, how many the node
closed, how many it left open after the wait).

The frame (Documentation/protocol.rst): a header of magic "tcHA", version
u16, type u16, flags u16, reserved u16, payload length u32, sequence u64,
then the payload, then a trailer u32, the CRC32C of header and payload;
all little-endian. Hello carries a 32-byte nonce and the ha_id."""
import json
import random
import socket
import struct
import sys
import time

from wirecrc import crc32c

MAGIC = b"tcHA"
VERSION = 6
HEADER = 24
HELLO, AUTH_RESPONSE, LOGIN, LUN_STATE = 0x0001, 0x0002, 0x0010, 0x0100
HELLO_LEN = HEADER + 33 + 4


def frame(ty: int, payload: bytes, seq: int = 0, magic: bytes = MAGIC, version: int = VERSION,
          flags: int = 0, reserved: int = 0, length: int | None = None, crc_xor: int = 0) -> bytes:
    """A frame; its trailer has the bits of `crc_xor` flipped."""
    n = len(payload) if length is None else length
    body = magic + struct.pack("<HHHHIQ", version, ty, flags, reserved, n, seq) + payload
    return body + struct.pack("<I", crc32c(body) ^ crc_xor)


def hello(rnd: random.Random, ha_id: int = 2) -> bytes:
    return frame(HELLO, rnd.randbytes(32) + bytes([ha_id]))


def cases(rnd: random.Random):
    """(kind, bytes to send, keep the connection open after sending)."""
    h = hello(rnd)
    hp = h[HEADER:-4]
    # A Hello with one bit of its payload flipped, its trailer as sent.
    flipped = bytearray(h)
    flipped[rnd.randrange(HEADER, len(h) - 4)] ^= 1 << rnd.randint(0, 7)
    return [
        ("garbage", rnd.randbytes(rnd.randint(1, 200)), False),
        ("http", b"GET / HTTP/1.0\r\n\r\n", False),
        ("bad_magic", frame(HELLO, hp, magic=b"XXXX"), False),
        # 1: a node of the protocol without checksums.
        ("bad_version", frame(HELLO, hp, version=rnd.choice([0, 1, VERSION + 1, 99, 0xFFFF])), False),
        ("flags", frame(HELLO, hp, flags=1 << rnd.randint(0, 15)), False),
        ("reserved", frame(HELLO, hp, reserved=rnd.randint(1, 0xFFFF)), False),
        ("oversized", frame(HELLO, b"", length=rnd.choice([1 << 20, 0x7FFFFFFF, 0xFFFFFFFF])), True),
        ("unknown_type", frame(rnd.choice([0x0000, 0x7777, 0xFFFF]), b"x" * 8), False),
        ("short_payload", frame(HELLO, rnd.randbytes(5)), False),
        ("trailing_payload", frame(HELLO, rnd.randbytes(40)), False),
        ("truncated", h[:rnd.randint(1, len(h) - 1)], False),
        ("stalled_frame", h[:HEADER], True),
        # Right after a timeout, so that the dmesg line is not held back as
        # a repeat of the protocol errors before.
        ("bad_checksum", rnd.choice([frame(HELLO, hp, crc_xor=1 << rnd.randint(0, 31)), bytes(flipped)]), False),
        ("seq_gap", frame(HELLO, hp, seq=rnd.randint(1, 1 << 40)), False),
        ("login_first", frame(LOGIN, rnd.randbytes(40)), False),
        ("lun_before_auth", frame(LUN_STATE, rnd.randbytes(64)), False),
        ("fuzzed_hello", bytes(b ^ (1 << rnd.randint(0, 7)) if rnd.random() < 0.05 else b for b in h), False),
    ]


def closed_by_peer(s: socket.socket, wait: float) -> bool:
    s.settimeout(wait)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def connect(host: str, port: int) -> socket.socket:
    for _ in range(100):
        try:
            return socket.create_connection((host, port), timeout=5)
        except ConnectionRefusedError:
            # The listener is pausing after the last failure.
            time.sleep(0.1)
    raise SystemExit("listener never accepted")


def main() -> None:
    host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    kinds: dict[str, int] = {}
    closed = left_open = 0
    for i in range(n):
        cs = cases(rnd)
        # Every kind in turn (the slow stalled ones every few rounds), then random.
        kind, data, keep = cs[i % len(cs)] if i < 2 * len(cs) else rnd.choice(cs)
        if keep and i >= len(cs) and rnd.random() < 0.8:
            kind, data, keep = cs[0]
        s = connect(host, port)
        try:
            s.sendall(data)
            if not keep:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # The handshake timeout is 5 s: a stalled peer is dropped by then.
        if closed_by_peer(s, 8.0):
            closed += 1
        else:
            left_open += 1
        s.close()
        kinds[kind] = kinds.get(kind, 0) + 1
    # Reflection: the node's own Hello sent back to it, then a made-up MAC.
    s = connect(host, port)
    s.sendall(hello(rnd))
    s.settimeout(5)
    got = b""
    try:
        while len(got) < HELLO_LEN:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    if len(got) >= HELLO_LEN:
        s.sendall(frame(AUTH_RESPONSE, rnd.randbytes(32), seq=1) + got[:HELLO_LEN])
    if closed_by_peer(s, 8.0):
        closed += 1
    else:
        left_open += 1
    s.close()
    kinds["bad_auth_and_reflected_hello"] = 1
    print(json.dumps({"cases": n + 1, "closed": closed, "left_open": left_open, "kinds": kinds,
                      "server_hello_seen": len(got) >= HELLO_LEN}))


if __name__ == "__main__":
    main()
