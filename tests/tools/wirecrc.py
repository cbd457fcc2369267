"""CRC32C (Castagnoli), the interlink's frame trailer (protocol v2), for
the test tools that build or take apart frames (hostile_peer.py,
rogue_peer.py, ../linkfault.py)."""


def _table() -> list[int]:
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC32C of `data`, as iSCSI's digests."""
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF
