"""ClickHouse native compressed blocks and HTTP content encodings.

Native blocks (``decompress=1`` request bodies, ``compress=1`` responses), as written by
ClickHouse and the Rust ``clickhouse`` crate:

    checksum   16 B  CityHash128 v1.0.2 of everything after it (first u64 LE, then second u64 LE)
    method      1 B  0x02 none, 0x82 LZ4, 0x90 ZSTD
    csize       4 B  u32 LE, size of method+csize+usize+payload (payload + 9)
    usize       4 B  u32 LE, uncompressed size
    payload

``BlockDecoder`` decodes a stream fed in arbitrary pieces. Errors (``ClickHouseError``):
checksum mismatch -> 40, unknown method -> 89, implausible sizes -> 246,
undecodable payload or a truncated last block -> 271.

HTTP content encodings: ``request_decoder(name)`` returns a streaming decoder for a
request ``Content-Encoding`` (gzip, deflate, zstd, lz4 frame, xz; unknown -> 89) and
``choose_response_encoding`` / ``encode_response`` pick and apply the response
encoding (lz4 frame > zstd > gzip > deflate).
"""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib

import lz4.block
import lz4.frame
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

from .errors import ClickHouseError

METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90

CHECKSUM_SIZE = 16
HEADER_SIZE = 9
_MAX_BLOCK = 1 << 30  # DBMS_MAX_COMPRESSED_SIZE
_M64 = (1 << 64) - 1


def checksum(data: bytes) -> bytes:
    """The 16-byte block checksum ClickHouse writes before a compressed block."""
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & _M64)


def encode_block(data: bytes, method: int = METHOD_LZ4) -> bytes:
    """One native compressed block holding ``data``."""
    if method == METHOD_LZ4:
        payload = lz4.block.compress(data, store_size=False)
    elif method == METHOD_ZSTD:
        payload = zstandard.ZstdCompressor(level=1).compress(data)
    elif method == METHOD_NONE:
        payload = bytes(data)
    else:
        raise ValueError(f"unsupported method 0x{method:02x}")
    header = struct.pack("<BII", method, len(payload) + HEADER_SIZE, len(data))
    return checksum(header + payload) + header + payload


def encode_blocks(data, block_size: int = 1 << 20, method: int = METHOD_LZ4) -> bytes:
    """``data`` split into native blocks of at most ``block_size`` uncompressed bytes."""
    view = memoryview(data)
    return b"".join(encode_block(bytes(view[i:i + block_size]), method)
                    for i in range(0, len(view), block_size))


class BlockDecoder:
    """Streaming decoder of native compressed blocks (see module docstring)."""

    def __init__(self, verify_checksum: bool = True):
        self._buf = bytearray()
        self._verify = verify_checksum
        self._zstd = zstandard.ZstdDecompressor()
        self.blocks = 0
        self.compressed_bytes = 0

    def feed(self, data) -> list[bytes]:
        """Adds received bytes; returns the decoded contents of every completed block."""
        self._buf += data
        out = []
        while len(self._buf) >= CHECKSUM_SIZE + HEADER_SIZE:
            method, csize, usize = struct.unpack_from("<BII", self._buf, CHECKSUM_SIZE)
            if method not in (METHOD_NONE, METHOD_LZ4, METHOD_ZSTD):
                raise ClickHouseError(
                    89, f"Unknown compression method 0x{method:02x} in compressed block "
                        f"#{self.blocks + 1} (supported: 0x02 none, 0x82 LZ4, 0x90 ZSTD)")
            if csize < HEADER_SIZE or csize > _MAX_BLOCK or usize > _MAX_BLOCK:
                raise ClickHouseError(
                    246, f"Too large or invalid size of compressed block #{self.blocks + 1}: "
                         f"compressed {csize}, uncompressed {usize}. Most likely corrupted data")
            total = CHECKSUM_SIZE + csize
            if len(self._buf) < total:
                break
            block = bytes(self._buf[CHECKSUM_SIZE:total])
            if self._verify:
                expected = bytes(self._buf[:CHECKSUM_SIZE])
                actual = checksum(block)
                if actual != expected:
                    raise ClickHouseError(
                        40, "Checksum doesn't match: corrupted data. "
                            f"Reference: {expected.hex()}. Actual: {actual.hex()}. "
                            f"Size of compressed block: {csize}")
            del self._buf[:total]
            out.append(self._decode(method, block[HEADER_SIZE:], usize))
            self.blocks += 1
            self.compressed_bytes += total
        return out

    def _decode(self, method: int, payload: bytes, usize: int) -> bytes:
        try:
            if method == METHOD_LZ4:
                data = lz4.block.decompress(payload, uncompressed_size=usize)
            elif method == METHOD_ZSTD:
                data = self._zstd.decompress(payload, max_output_size=usize)
            else:
                data = payload
        except Exception as e:  # lz4/zstd raise their own error types
            raise ClickHouseError(
                271, f"Cannot decompress block #{self.blocks + 1}: {e}") from None
        if len(data) != usize:
            raise ClickHouseError(
                271, f"Cannot decompress block #{self.blocks + 1}: got {len(data)} bytes, "
                     f"header says {usize}")
        return data

    def finish(self) -> None:
        """Raises 271 if the stream ended inside a block."""
        if self._buf:
            raise ClickHouseError(
                271, f"Cannot decompress: the body ends inside compressed block "
                     f"#{self.blocks + 1} ({len(self._buf)} bytes left over)")


# ---------------------------------------------------------------- HTTP content encodings

class _ZlibDecoder:
    def __init__(self, wbits: int):
        self._d = zlib.decompressobj(wbits)

    def feed(self, data) -> bytes:
        return self._d.decompress(data)

    def finish(self) -> bytes:
        return self._d.flush()


class _ZstdDecoder:
    def __init__(self):
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data) -> bytes:
        return self._d.decompress(bytes(data))

    def finish(self) -> bytes:
        return b""


class _Lz4FrameDecoder:
    def __init__(self):
        self._d = lz4.frame.LZ4FrameDecompressor()

    def feed(self, data) -> bytes:
        out = self._d.decompress(bytes(data))
        if self._d.eof:  # concatenated frames
            rest = self._d.unused_data
            self._d = lz4.frame.LZ4FrameDecompressor()
            if rest:
                out += self.feed(rest)
        return out

    def finish(self) -> bytes:
        return b""


class _XzDecoder:
    def __init__(self):
        self._d = lzma.LZMADecompressor()

    def feed(self, data) -> bytes:
        return self._d.decompress(bytes(data))

    def finish(self) -> bytes:
        return b""


def request_decoder(content_encoding: str):
    """A streaming decoder (feed/finish) for a request Content-Encoding, or None for identity."""
    name = content_encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return _ZlibDecoder(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return _ZlibDecoder(zlib.MAX_WBITS)
    if name == "zstd":
        return _ZstdDecoder()
    if name == "lz4":
        return _Lz4FrameDecoder()
    if name in ("xz", "lzma"):
        return _XzDecoder()
    raise ClickHouseError(
        89, f"Unknown HTTP compression method of the request body: {content_encoding!r} "
            "(supported: gzip, deflate, zstd, lz4, xz)")


RESPONSE_ENCODINGS = ("lz4", "zstd", "gzip", "deflate")


def choose_response_encoding(accept_encoding: str | None) -> str | None:
    """The best encoding the client accepts, in the order lz4 > zstd > gzip > deflate."""
    if not accept_encoding:
        return None
    accepted = set()
    for item in accept_encoding.split(","):
        parts = item.strip().split(";")
        name = parts[0].strip().lower()
        q = 1.0
        for p in parts[1:]:
            p = p.strip()
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 1.0
        if name and q > 0:
            accepted.add(name)
    for name in RESPONSE_ENCODINGS:
        if name in accepted:
            return name
    return None


def encode_response(data, encoding: str, level: int = 3) -> bytes:
    """``data`` encoded with an HTTP content encoding from RESPONSE_ENCODINGS."""
    if encoding == "lz4":
        return lz4.frame.compress(bytes(data))
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=max(1, min(level, 22))).compress(data)
    level = max(1, min(level, 9))
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data, level)
    raise ValueError(f"unsupported response encoding {encoding!r}")
