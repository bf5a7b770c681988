"""Response compression: Accept-Encoding (lz4 frame, zstd, gzip, deflate) and compress=1."""

from __future__ import annotations

import gzip
import struct
import zlib

import lz4.block
import lz4.frame
import zstandard

QUERY = "SELECT number, toString(number) FROM numbers(20000)"


def test_lz4_frame_response(client):
    plain = client.ok(QUERY)
    r = client.post(QUERY, headers={"Accept-Encoding": "lz4"})
    assert r.status == 200 and r.headers["Content-Encoding"] == "lz4"
    assert lz4.frame.decompress(r.body) == plain
    assert len(r.body) < len(plain)


def test_preference_order_and_other_encodings(client):
    plain = client.ok(QUERY)
    r = client.post(QUERY, headers={"Accept-Encoding": "gzip, deflate, zstd, lz4"})
    assert r.headers["Content-Encoding"] == "lz4"
    r = client.post(QUERY, headers={"Accept-Encoding": "gzip, deflate, zstd"})
    assert r.headers["Content-Encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompress(r.body) == plain
    r = client.post(QUERY, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.body) == plain
    r = client.post(QUERY, headers={"Accept-Encoding": "deflate"})
    assert r.headers["Content-Encoding"] == "deflate"
    assert zlib.decompress(r.body) == plain
    r = client.post(QUERY, headers={"Accept-Encoding": "br"})
    assert "Content-Encoding" not in r.headers and r.body == plain
    r = client.post(QUERY, headers={"Accept-Encoding": "lz4;q=0, gzip"})
    assert r.headers["Content-Encoding"] == "gzip"


def test_compression_can_be_disabled_and_errors_stay_plain(client):
    plain = client.ok(QUERY)
    r = client.post(QUERY, params={"enable_http_compression": "0"},
                    headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in r.headers and r.body == plain
    r = client.post("SELEC 1", headers={"Accept-Encoding": "lz4"})
    assert r.code == 62 and "Content-Encoding" not in r.headers
    assert r.body.startswith(b"Code: 62.")


def test_native_compressed_response(client):
    plain = client.ok(QUERY)
    r = client.post(QUERY, params={"compress": "1"})
    out, pos = b"", 0
    while pos < len(r.body):
        method, csize, usize = struct.unpack_from("<BII", r.body, pos + 16)
        assert method == 0x82
        out += lz4.block.decompress(r.body[pos + 25:pos + 16 + csize], uncompressed_size=usize)
        pos += 16 + csize
    assert out == plain
