"""Test-side encoders written independently of chfront: what the Rust crate sends.

- ``crate_lz4_block(data)``: one ClickHouse compressed block as clickhouse-0.15.3 builds it
  (lz4_flex block, header 0x82 + u32 LE compressed size incl. the 9-byte header + u32 LE
  uncompressed size, CityHash128 v1.0.2 over header+payload written as a u128 LE after
  rotating it by 64 bits, i.e. the first half of the hash first).
- ``crate_insert_chunks(rows_bytes)``: the chunks of a crate insert body (one compressed
  block per ~254 KiB buffer).
- RowBinary helpers: ``varint``, ``rb_string``, ``rbwnat_header``.
"""

from __future__ import annotations

import struct

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

CRATE_BUFFER = 254 * 1024


def crate_lz4_block(data: bytes, method: int = 0x82) -> bytes:
    payload = lz4.block.compress(data, store_size=False) if method == 0x82 else data
    header = bytes([method]) + struct.pack("<I", len(payload) + 9) + struct.pack("<I", len(data))
    h = CityHash128(header + payload)  # (first << 64) | second
    rotated = ((h >> 64) | (h << 64)) & ((1 << 128) - 1)
    return rotated.to_bytes(16, "little") + header + payload


def crate_insert_chunks(data: bytes, buffer: int = CRATE_BUFFER) -> list[bytes]:
    return [crate_lz4_block(data[i:i + buffer]) for i in range(0, len(data), buffer)]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rb_string(s) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def rbwnat_header(columns: list[tuple[str, str]]) -> bytes:
    return (varint(len(columns)) + b"".join(rb_string(n) for n, _ in columns)
            + b"".join(rb_string(t) for _, t in columns))


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def read_rb_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_varint(buf, pos)
    return buf[pos:pos + n], pos + n


def parse_rbwnat_strings(buf: bytes) -> tuple[list[str], list[str], list[list[str]]]:
    """Parses an RBWNAT result whose columns are all String."""
    ncols, pos = read_varint(buf, 0)
    names, types = [], []
    for _ in range(ncols):
        s, pos = read_rb_string(buf, pos)
        names.append(s.decode())
    for _ in range(ncols):
        s, pos = read_rb_string(buf, pos)
        types.append(s.decode())
    rows = []
    while pos < len(buf):
        row = []
        for _ in range(ncols):
            s, pos = read_rb_string(buf, pos)
            row.append(s.decode())
        rows.append(row)
    return names, types, rows
