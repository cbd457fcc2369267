#!/usr/bin/env python3
"""A minimal iSCSI initiator that sends SCSI commands with a chosen task
attribute (SIMPLE, ORDERED, HEAD OF QUEUE), which the Linux initiator
cannot do (it tags every command SIMPLE).

    iscsi_task.py PORTAL TARGET_IQN INITIATOR_IQN ATTR read LBA BLOCKS
    iscsi_task.py PORTAL TARGET_IQN INITIATOR_IQN ATTR write LBA FILE

Logs in (no authentication, straight to the operational stage), sends the
command to LUN 0, retries a UNIT ATTENTION up to 5 times, and prints one
line: `status 0x00 md5 <md5 of the data read or written> bytes N`, or
`status 0xSS sense KEY/ASC/ASCQ`. Reads take one Data-In sequence; writes
go as immediate data (up to the target's MaxRecvDataSegmentLength,
8 KiB by default in LIO). Exit status 0 on GOOD, 1 otherwise,
2 on a protocol error. Framing per RFC 7143; nothing else is supported.

With TASK_GO=FILE in the environment the tool creates FILE.ready once it
is logged in (and has read the capacity) and sends the command only once
FILE exists (at most 120 s later): a test then times the command alone,
not Python's start and the login.

With TASK_ABORT=SECS the tool sends an ABORT TASK for the command SECS
seconds after it, and prints `tmf 0xRR after S.SSs; command: none` (or
the command's own status line, had it ended first or been answered
anyway); exit status 0 when the abort's response is FUNCTION COMPLETE
(0x00).
"""
import hashlib
import os
import socket
import struct
import sys
import time

ATTRS = {"simple": 1, "ordered": 2, "head": 3}
BHS = 48
# Keys a target states rather than negotiates.
DECLARATIVE = {"TargetAlias", "TargetPortalGroupTag", "TargetAddress", "MaxRecvDataSegmentLength", "TargetName"}


def pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Session:
    def __init__(self, portal: str, target: str, initiator: str):
        host, _, port = portal.partition(":")
        self.s = socket.create_connection((host, int(port or 3260)), timeout=60)
        self.itt, self.cmdsn, self.expstatsn = 1, 1, 0
        keys = {"InitiatorName": initiator, "SessionType": "Normal", "TargetName": target,
                "HeaderDigest": "None", "DataDigest": "None", "ImmediateData": "Yes",
                "InitialR2T": "Yes", "MaxRecvDataSegmentLength": "262144", "FirstBurstLength": "65536",
                "MaxBurstLength": "262144", "ErrorRecoveryLevel": "0", "DefaultTime2Wait": "2",
                "DefaultTime2Retain": "0", "IFMarker": "No", "OFMarker": "No", "MaxOutstandingR2T": "1",
                "MaxConnections": "1", "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes"}
        data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
        isid = bytes([0x80, 0, 0x23, 0x45, 0x67, 0x89])
        last = {}
        for _ in range(4):
            # Login: immediate, T=1, CSG=1 (operational), NSG=3 (full feature).
            hdr = struct.pack(">BBBBB3s6sHIHHII16s", 0x43, 0x87, 0, 0, 0, len(data).to_bytes(3, "big"),
                              isid, 0, self.itt, 1, 0, self.cmdsn, self.expstatsn, b"")
            # DataSegmentLength counts the text, not the padding.
            self.s.sendall(hdr + pad(data))
            op, flags, h, rdata = self.recv()
            if op != 0x23:
                raise RuntimeError(f"login: unexpected opcode 0x{op:02x}")
            if h[36] != 0:
                raise RuntimeError(f"login refused: status class {h[36]} detail {h[37]}")
            self.expstatsn = struct.unpack_from(">I", h, 24)[0] + 1
            if flags & 0x80 and (flags & 0x3) == 3:
                self.cmdsn = struct.unpack_from(">I", h, 28)[0]
                return
            # The target offered keys of its own: accept each (declarative
            # ones need no answer).
            got = dict(kv.split("=", 1) for kv in rdata.decode(errors="replace").split("\0") if "=" in kv)
            answer = {k: v for k, v in got.items() if k not in keys and k not in DECLARATIVE}
            data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in answer.items())
            last = got
        raise RuntimeError(f"login did not reach the full feature phase (target said {last})")

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("connection closed by the target")
            buf += chunk
        return buf

    def recv(self):
        h = self.recv_exact(BHS)
        ahs = h[4] * 4
        dlen = int.from_bytes(h[5:8], "big")
        self.recv_exact(ahs)
        data = self.recv_exact(dlen + (-dlen % 4))[:dlen]
        return h[0] & 0x3F, h[1], h, data

    def command(self, attr: int, cdb: bytes, read_len: int = 0, write: bytes = b""):
        """Sends one command to LUN 0; (status, data read, sense)."""
        self.send(attr, cdb, read_len, write)
        return self.wait(read_len)

    def send(self, attr: int, cdb: bytes, read_len: int = 0, write: bytes = b"") -> tuple[int, int]:
        """Sends one command to LUN 0; its (ITT, CmdSN)."""
        self.itt += 1
        flags = 0x80 | attr | (0x40 if read_len else 0) | (0x20 if write else 0)
        xfer = read_len or len(write)
        hdr = struct.pack(">BBH B3s 8s I I I I 16s", 0x01, flags, 0, 0, len(write).to_bytes(3, "big"),
                          b"\0" * 8, self.itt, xfer, self.cmdsn, self.expstatsn, cdb.ljust(16, b"\0"))
        self.cmdsn += 1
        self.s.sendall(hdr + pad(write))
        return self.itt, self.cmdsn - 1

    def wait(self, read_len: int = 0):
        """The answer to the command just sent: (status, data read, sense)."""
        got = bytearray(read_len)
        while True:
            op, rflags, h, data = self.recv()
            if op == 0x25:  # Data-In
                off = struct.unpack_from(">I", h, 40)[0]
                got[off:off + len(data)] = data
                if rflags & 0x01:  # status in the last Data-In
                    self.expstatsn = struct.unpack_from(">I", h, 24)[0] + 1
                    return h[3], bytes(got), b""
            elif op == 0x21:  # SCSI Response
                self.expstatsn = struct.unpack_from(">I", h, 24)[0] + 1
                sense = data[2:2 + struct.unpack_from(">H", data, 0)[0]] if len(data) >= 2 else b""
                return h[3], bytes(got), sense
            elif op == 0x20:  # NOP-In: nothing to answer for an unsolicited one
                continue
            else:
                raise RuntimeError(f"unexpected opcode 0x{op:02x}")

    def abort_task(self, itt: int, cmdsn: int, linger: float = 1.0):
        """ABORT TASK for the command (ITT, CmdSN), as an immediate
        request: (the response code, seconds it took, the command's
        (status, sense) if it was answered before or up to `linger`
        seconds after the abort's response, else None)."""
        self.itt += 1
        hdr = struct.pack(">BBH B3s 8s I I I I I I 8s", 0x42, 0x81, 0, 0, b"\0\0\0", b"\0" * 8, self.itt, itt,
                          self.cmdsn, self.expstatsn, cmdsn, 0, b"")
        t0 = time.monotonic()
        self.s.sendall(hdr)
        response, took, answered = None, 0.0, None
        self.s.settimeout(60)
        while True:
            try:
                op, _, h, data = self.recv()
            except socket.timeout:
                if response is None:
                    raise RuntimeError("no response to the ABORT TASK within 60 s")
                break
            if op == 0x22 and struct.unpack_from(">I", h, 16)[0] == self.itt:
                self.expstatsn = struct.unpack_from(">I", h, 24)[0] + 1
                response, took = h[2], time.monotonic() - t0
                self.s.settimeout(linger)
            elif op == 0x21 and struct.unpack_from(">I", h, 16)[0] == itt:
                self.expstatsn = struct.unpack_from(">I", h, 24)[0] + 1
                sense = data[2:2 + struct.unpack_from(">H", data, 0)[0]] if len(data) >= 2 else b""
                answered = (h[3], sense)
            elif op in (0x20, 0x25):
                continue
            else:
                raise RuntimeError(f"unexpected opcode 0x{op:02x}")
        self.s.settimeout(60)
        return response, took, answered

    def logout(self):
        self.itt += 1
        hdr = struct.pack(">BBH B3s 8s I HH I I 16s", 0x46, 0x80, 0, 0, b"\0\0\0", b"\0" * 8, self.itt, 1, 0,
                          self.cmdsn, self.expstatsn, b"")
        self.s.sendall(hdr)
        try:
            self.recv()
        finally:
            self.s.close()


def main(argv: list[str]) -> int:
    portal, target, initiator, attr, what, lba = argv[1:7]
    s = Session(portal, target, initiator)
    # The block size, from READ CAPACITY(10).
    for _ in range(5):
        st, cap, sense = s.command(1, bytes([0x25]) + b"\0" * 9, 8)
        if st == 0:
            break
    if st != 0:
        print(f"status 0x{st:02x} sense {sense.hex()}")
        return 1
    bs = struct.unpack_from(">I", cap, 4)[0]
    go = os.environ.get("TASK_GO")
    if go:
        open(go + ".ready", "w").close()
        deadline = time.time() + 120
        while not os.path.exists(go):
            if time.time() > deadline:
                raise RuntimeError(f"{go} did not appear within 120 s")
            time.sleep(0.01)
    if what == "read":
        blocks = int(argv[7])
        cdb, payload, read_len = struct.pack(">BBIBHB", 0x28, 0, int(lba), 0, blocks, 0), b"", blocks * bs
    else:
        payload = open(argv[7], "rb").read()
        blocks = len(payload) // bs
        cdb, read_len = struct.pack(">BBIBHB", 0x2A, 0, int(lba), 0, blocks, 0), 0
    abort = os.environ.get("TASK_ABORT")
    if abort:
        itt, cmdsn = s.send(ATTRS[attr], cdb, read_len, payload)
        time.sleep(float(abort))
        response, took, answered = s.abort_task(itt, cmdsn)
        s.logout()
        cmd = "none" if answered is None else f"status 0x{answered[0]:02x} sense {answered[1][:14].hex()}"
        print(f"tmf 0x{response:02x} after {took:.2f}s; command: {cmd}")
        return 0 if response == 0 else 1
    for _ in range(5):
        st, data, sense = s.command(ATTRS[attr], cdb, read_len, payload)
        if not (st == 0x02 and len(sense) > 2 and sense[2] & 0xF == 6):
            break
    s.logout()
    if st != 0:
        key = f"{sense[2] & 0xF:x}/{sense[12]:02x}/{sense[13]:02x}" if len(sense) > 13 else sense.hex()
        print(f"status 0x{st:02x} sense {key}")
        return 1
    body = data if what == "read" else payload
    print(f"status 0x00 md5 {hashlib.md5(body).hexdigest()} bytes {len(body)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (RuntimeError, OSError, struct.error) as e:
        print(f"error: {e}")
        sys.exit(2)
