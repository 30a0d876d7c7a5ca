"""Big-endian u32 fields in byte buffers, shared by the record formats (codes, access log, store envelope,
protocol): u32(b, o) reads the 4 bytes at offset o, put32(b, o, v) writes them. Neither allocates."""


def u32(b, o: int) -> int:
    return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]


def put32(b, o: int, v: int) -> None:
    b[o] = (v >> 24) & 0xFF
    b[o + 1] = (v >> 16) & 0xFF
    b[o + 2] = (v >> 8) & 0xFF
    b[o + 3] = v & 0xFF
