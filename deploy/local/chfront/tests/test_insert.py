"""Inserts: INSERT ... FORMAT with a body, and the Rust crate's compressed RowBinary inserts."""

from __future__ import annotations

import json
import struct
import uuid

import lz4.frame

from chwire import (crate_insert_chunks, crate_lz4_block, parse_rbwnat_strings, rb_string,
                    rbwnat_header, varint)

CRATE_HEADERS = {"User-Agent": "clickhouse-rs/0.15.3 (lv:rust/1.89.0; os:linux)"}


def test_insert_format_with_query_param(client, db):
    client.ok(f"CREATE TABLE {db}.t (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    r = client.post(b"1\tone\n2\ttwo\n", params={"query": f"INSERT INTO {db}.t FORMAT TSV"})
    assert r.status == 200 and r.code is None and r.body == b""
    assert json.loads(r.headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    # the body starts with the INSERT: data after the format name and one newline
    client.ok(f"INSERT INTO {db}.t FORMAT CSV\n3,three\n4,four\n")
    client.ok(f'INSERT INTO {db}.t (a, s) FORMAT JSONEachRow {{"a": 5, "s": "five"}}')
    # VALUES and INSERT SELECT go through the query path
    client.ok(f"INSERT INTO {db}.t VALUES (6, 'six')")
    client.ok(f"INSERT INTO {db}.t SELECT 7, 'seven'")
    client.ok("", params={"query": f"INSERT INTO {db}.t FORMAT TSV"})  # empty body: no rows
    assert client.ok(f"SELECT groupArray(s) FROM (SELECT s FROM {db}.t ORDER BY a)") == \
        b"['one','two','three','four','five','six','seven']\n"
    # database parameter with an unqualified table, data parse error
    client.ok(b"8\teight\n", params={"query": "INSERT INTO t FORMAT TSV", "database": db})
    r = client.post(b"notanumber\tx\n", params={"query": f"INSERT INTO {db}.t FORMAT TSV"})
    assert r.status != 200 and r.code is not None
    assert client.ok(f"SELECT count() FROM {db}.t") == b"8\n"
    r = client.post(b"1\tx\n", params={"query": f"INSERT INTO {db}.nope FORMAT TSV"})
    assert (r.status, r.code) == (404, 60)


def _rows(n: int) -> bytes:
    out = bytearray(rbwnat_header([("id", "UInt64"), ("name", "String")]))
    for i in range(n):
        out += struct.pack("<Q", i) + rb_string(f"name-{i}")
    return bytes(out)


def _crate_insert(client, db: str, table: str, columns: list[str], chunks, extra=None):
    cols = ",".join(f"`{c}`" for c in columns)
    params = {"database": db,
              "query": f"INSERT INTO `{table}`({cols}) FORMAT RowBinaryWithNamesAndTypes",
              "decompress": "1"}
    params.update(extra or {})
    return client.request("POST", "/", body=iter(chunks), params=params, headers=CRATE_HEADERS)


def test_crate_style_lz4_insert(client, db):
    client.ok(f"CREATE TABLE {db}.t (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
    # the crate first DESCRIBEs the table, fetching RowBinaryWithNamesAndTypes
    r = client.post("DESCRIBE TABLE `t`", params={
        "database": db, "default_format": "RowBinaryWithNamesAndTypes",
        "describe_include_subcolumns": "0"}, headers={**CRATE_HEADERS, "Accept-Encoding": "lz4"})
    assert r.status == 200 and r.code is None
    assert r.headers["Content-Encoding"] == "lz4"
    names, types, rows = parse_rbwnat_strings(lz4.frame.decompress(r.body))
    assert names == ["name", "type", "default_type", "default_expression", "comment",
                     "codec_expression", "ttl_expression"]
    assert types == ["String"] * 7
    assert [row[:2] for row in rows] == [["id", "UInt64"], ["name", "String"]]

    data = _rows(60_000)  # ~1.3 MB -> several ~254 KiB blocks, one chunk each
    chunks = crate_insert_chunks(data)
    assert len(chunks) > 3
    r = _crate_insert(client, db, "t", ["id", "name"], chunks)
    assert r.status == 200 and r.code is None, r
    assert json.loads(r.headers["X-ClickHouse-Summary"])["written_rows"] == "60000"
    assert client.ok(f"SELECT count(), sum(id), max(name) FROM {db}.t") == \
        b"60000\t1799970000\tname-9999\n"


def test_compressed_insert_errors(client, db):
    client.ok(f"CREATE TABLE {db}.t (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
    chunks = crate_insert_chunks(_rows(30_000))
    bad = bytearray(chunks[1])
    bad[-1] ^= 0xFF  # corrupt the payload of the second block
    r = _crate_insert(client, db, "t", ["id", "name"], [chunks[0], bytes(bad), *chunks[2:]])
    assert r.status == 500 and r.code == 40, r
    assert "CHECKSUM_DOESNT_MATCH" in r.text
    # nothing was inserted, and the connection is still fine
    assert client.ok(f"SELECT count() FROM {db}.t") == b"0\n"

    # checksum verification can be turned off; a corrupted checksum is then accepted
    block = bytearray(crate_lz4_block(_rows(3)))
    block[0] ^= 0xFF
    r = _crate_insert(client, db, "t", ["id", "name"], [bytes(block)],
                      {"http_native_compression_disable_checksumming_on_decompress": "1"})
    assert r.status == 200, r
    assert client.ok(f"SELECT count() FROM {db}.t") == b"3\n"

    block = bytearray(crate_lz4_block(_rows(3)))
    block[16] = 0x42  # unknown method
    r = _crate_insert(client, db, "t", ["id", "name"], [bytes(block)])
    assert r.code == 89, r

    r = _crate_insert(client, db, "t", ["id", "name"], [chunks[0][:-10]])  # truncated
    assert r.code == 271, r

    # uncompressed (method 0x02) blocks are fine
    r = _crate_insert(client, db, "t", ["id", "name"], [crate_lz4_block(_rows(2), 0x02)])
    assert r.status == 200, r
    assert client.ok(f"SELECT count() FROM {db}.t") == b"5\n"

    # a type mismatch in the RowBinaryWithNamesAndTypes header is the engine's error
    wrong = rbwnat_header([("id", "UInt32"), ("name", "String")]) + b"\x01\x00\x00\x00\x01x"
    r = _crate_insert(client, db, "t", ["id", "name"], [crate_lz4_block(wrong)])
    assert r.status == 400 and r.code == 117, r
    assert "Streaming insert" not in r.text


ALL_TYPES = [
    ("id", "UUID"),
    ("ts", "DateTime64(6, 'UTC')"),
    ("kind", "Enum8('a' = 1, 'b' = 2)"),
    ("lc", "LowCardinality(String)"),
    ("ns", "Nullable(String)"),
    ("nd", "Nullable(Decimal(38, 18))"),
    ("d", "Decimal(38, 18)"),
    ("m", "Map(LowCardinality(String), String)"),
    ("flag", "Bool"),
    ("u16", "UInt16"),
    ("u64", "UInt64"),
    ("i32", "Int32"),
    ("i64", "Int64"),
]


def test_all_column_types_round_trip(client, db):
    cols = ", ".join(f"`{n}` {t}" for n, t in ALL_TYPES)
    for t in ("src", "dst", "hand"):
        client.ok(f"CREATE TABLE {db}.{t} ({cols}) ENGINE = MergeTree ORDER BY (u64, id)")
    client.ok(f"""INSERT INTO {db}.src VALUES
        ('61f0c404-5cb3-11e7-907b-a6006ad3dba0', '2024-05-06 07:08:09.123456', 'a', 'lc1',
         NULL, NULL, 12345.000000000000000001, {{'k1': 'v1', 'k2': 'v2'}}, true, 65535,
         18446744073709551615, -2147483648, -9223372036854775808),
        ('00000000-0000-0000-0000-000000000001', '1970-01-01 00:00:00.000001', 'b', '',
         'text', -0.5, -99999999999999999999.999999999999999999, {{}}, false, 0, 0, 1, 2)""")
    names = [n for n, _ in ALL_TYPES]
    select = "SELECT " + ", ".join(f"`{n}`" for n in names) + f" FROM {db}.%s ORDER BY u64"
    # fetch like the crate: RowBinaryWithNamesAndTypes, lz4 frame response
    r = client.post(select % "src", params={"default_format": "RowBinaryWithNamesAndTypes"},
                    headers={"Accept-Encoding": "lz4"})
    assert r.status == 200 and r.headers["Content-Encoding"] == "lz4"
    fetched = lz4.frame.decompress(r.body)
    # insert exactly those bytes like the crate does
    r = _crate_insert(client, db, "dst", names, crate_insert_chunks(fetched))
    assert r.status == 200 and r.code is None, r
    plain = client.ok(select % "src", params={"default_format": "JSONEachRow"})
    assert client.ok(select % "dst", params={"default_format": "JSONEachRow"}) == plain
    rows = [json.loads(line) for line in plain.splitlines()]
    assert rows[0]["ts"] == "1970-01-01 00:00:00.000001" and rows[0]["ns"] == "text"
    assert rows[1]["m"] == {"k1": "v1", "k2": "v2"} and rows[1]["nd"] is None

    # and one row encoded by hand, as the crate's serializer would
    header = rbwnat_header(ALL_TYPES)
    uuid_value = uuid.UUID("61f0c404-5cb3-11e7-907b-a6006ad3dba0").int
    row = (struct.pack("<QQ", uuid_value >> 64, uuid_value & (2**64 - 1))
           + struct.pack("<q", 1_714_979_289_123_456)            # DateTime64(6)
           + struct.pack("<b", 2)                                # Enum8 'b'
           + rb_string("lc")                                     # LowCardinality(String)
           + b"\x00" + rb_string("present")                      # Nullable(String)
           + b"\x00" + (15 * 10**17).to_bytes(16, "little", signed=True)  # Nullable(Decimal) 1.5
           + (-(25 * 10**16)).to_bytes(16, "little", signed=True)         # Decimal -0.25
           + varint(1) + rb_string("key") + rb_string("value")   # Map
           + b"\x01"                                             # Bool
           + struct.pack("<H", 7) + struct.pack("<Q", 8) + struct.pack("<i", -9)
           + struct.pack("<q", -10))
    r = _crate_insert(client, db, "hand", names, [crate_lz4_block(header + row)])
    assert r.status == 200, r
    got = json.loads(client.ok(select % "hand", params={"default_format": "JSONEachRow"}))
    assert got == {"id": "61f0c404-5cb3-11e7-907b-a6006ad3dba0",
                   "ts": "2024-05-06 07:08:09.123456", "kind": "b", "lc": "lc",
                   "ns": "present", "nd": 1.5, "d": -0.25, "m": {"key": "value"},
                   "flag": True, "u16": 7, "u64": 8, "i32": -9, "i64": -10}
