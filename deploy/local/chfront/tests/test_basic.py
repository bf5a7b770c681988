"""Endpoints, queries, formats, errors and HTTP transport behaviour."""

from __future__ import annotations

import gzip
import json
import re
import socket

ERROR_BODY = re.compile(
    r"^Code: (\d+)\. DB::Exception: .+ \(([A-Z_0-9]+)\) \(version 26\.9\.\d+\.\d+ \(official build\)\)\n$",
    re.DOTALL)


def test_health_endpoints(client):
    for method, path in [("GET", "/ping"), ("GET", "/"), ("HEAD", "/"), ("GET", "/replicas_status")]:
        r = client.request(method, path)
        assert r.status == 200, (method, path, r)
        assert r.body == (b"" if method == "HEAD" else b"Ok.\n")
    r = client.request("GET", "/no/such/handler")
    assert r.status == 404
    assert b"There is no handle /no/such/handler" in r.body
    r = client.request("PUT", "/", body=b"SELECT 1")
    assert r.status == 404


def test_get_and_post_queries(client):
    r = client.get("SELECT 1 + 1, 'a'")
    assert r.status == 200 and r.code is None
    assert r.body == b"2\ta\n"
    assert r.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert r.headers["Content-Type"].startswith("text/tab-separated-values")
    assert r.headers["X-ClickHouse-Query-Id"]
    assert r.headers["X-ClickHouse-Timezone"]
    assert r.headers["X-ClickHouse-Server-Display-Name"]

    r = client.post("SELECT number FROM numbers(3)")
    assert r.body == b"0\n1\n2\n"

    # the query parameter followed by a newline and the body
    r = client.post(b"1 + 41", params={"query": "SELECT"})
    assert r.body == b"42\n"

    # any path accepts POST queries, query_id is echoed
    r = client.post("SELECT 7", path="/some/path", params={"query_id": "my-query-1"})
    assert r.body == b"7\n"
    assert r.headers["X-ClickHouse-Query-Id"] == "my-query-1"


def test_summary_header(client):
    r = client.post("SELECT number FROM numbers(10) WHERE number % 2 = 0")
    summary = json.loads(r.headers["X-ClickHouse-Summary"])
    assert all(isinstance(v, str) for v in summary.values())
    assert summary["read_rows"] == "10"
    assert summary["result_rows"] == "5"
    assert {"read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
            "result_bytes", "elapsed_ns"} <= summary.keys()


def test_formats(client):
    r = client.post("SELECT number AS n, toString(number) AS s FROM numbers(2)",
                    params={"default_format": "JSONEachRow"})
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"n": 0, "s": "0"}, {"n": 1, "s": "1"}]

    # a FORMAT clause in the query wins over default_format
    r = client.post("SELECT 1 AS x FORMAT JSON", params={"default_format": "JSONEachRow"})
    assert r.headers["X-ClickHouse-Format"] == "JSON"
    assert r.headers["Content-Type"].startswith("application/json")
    doc = json.loads(r.body)
    assert doc["data"] == [{"x": 1}] and doc["rows"] == 1

    r = client.post("SELECT 1 AS x", params={"default_format": "CSVWithNames"})
    assert r.body == b'"x"\n1\n'
    assert r.headers["Content-Type"].startswith("text/csv")

    r = client.post("SELECT 1 AS x", params={"default_format": "RowBinaryWithNamesAndTypes"})
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.body == b"\x01\x01x\x05UInt8\x01"

    r = client.post("SELECT 1", params={"default_format": "NoSuchFormat"})
    assert (r.status, r.code) == (404, 73)


def test_unknown_setting(client):
    r = client.post("SELECT 1", params={"definitely_not_a_setting": "1"})
    assert r.status == 404 and r.code == 115
    assert ERROR_BODY.match(r.text).groups() == ("115", "UNKNOWN_SETTING")
    assert r.headers["Content-Type"] == "text/plain; charset=UTF-8"


def test_syntax_error_and_empty_query(client):
    r = client.post("SELEC 1")
    assert r.status == 400 and r.code == 62
    m = ERROR_BODY.match(r.text)
    assert m and m.groups() == ("62", "SYNTAX_ERROR"), r.text
    r = client.post("")
    assert (r.status, r.code) == (400, 62)
    assert "Empty query" in r.text
    r = client.post("SELECT * FROM no_such_db_xyz.t")
    assert (r.status, r.code) == (404, 81)
    r = client.post("SELECT throwIf(1, 'boom')")
    assert r.status == 500 and r.code == 395 and "boom" in r.text


def test_keep_alive_reuses_one_connection(client):
    client.ok("SELECT 1")
    sock = client.conn.sock
    assert sock is not None
    for i in range(20):
        if i % 5 == 0:
            r = client.post("SELEC 1")  # errors keep the connection too
            assert r.code == 62
        else:
            assert client.ok(f"SELECT {i}") == f"{i}\n".encode()
        assert client.conn.sock is sock, "the connection was re-opened"


def _read_response(sock) -> tuple[int, dict, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        assert data
        rest += data
    return status, headers, rest[:length]


def test_expect_100_continue(front):
    body = b"SELECT count() FROM numbers(10) WHERE '" + b"x" * 2_000_000 + b"' != ''"
    with socket.create_connection(("127.0.0.1", front.port), timeout=60) as sock:
        sock.sendall(b"POST /?max_query_size=10000000 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = sock.recv(1024)
            assert data
            interim += data
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(body)
        status, headers, payload = _read_response(sock)
        assert status == 200 and payload == b"10\n"
        # and the connection stays usable
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nSELECT 5")
        status, _, payload = _read_response(sock)
        assert status == 200 and payload == b"5\n"


def test_chunked_request_body(client):
    def pieces():
        yield b"SELECT "
        yield b"sum(number) "
        yield b"FROM numbers(101)"
    r = client.request("POST", "/", body=pieces())
    assert r.status == 200 and r.body == b"5050\n"


def test_gzip_request_body(client):
    r = client.request("POST", "/", body=gzip.compress(b"SELECT 'zipped'"),
                       headers={"Content-Encoding": "gzip"})
    assert r.status == 200 and r.body == b"zipped\n"
    r = client.request("POST", "/", body=b"xx", headers={"Content-Encoding": "br"})
    assert r.code == 89


def test_head_query(client):
    r = client.request("HEAD", "/?query=SELECT+1")
    assert r.status == 200 and r.body == b""
    assert r.headers["X-ClickHouse-Format"] == "TabSeparated"


def test_multi_statement_and_params_in_url(client):
    r = client.post("SELECT {x:UInt32} * 2 AS y, {s:String} AS s",
                    params={"param_x": "21", "param_s": "a\\tb"})
    assert r.body == b"42\ta\\tb\n"  # TSV output escapes the tab again
    r = client.post("SELECT {s:String} AS s", params={"param_s": "a\\tb",
                                                      "default_format": "JSONEachRow"})
    assert json.loads(r.body) == {"s": "a\tb"}


def test_malformed_chunked_body_closes_connection(front):
    with socket.create_connection(("127.0.0.1", front.port), timeout=60) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\nSELECT 1\r\n0\r\n\r\n")
        status, headers, body = _read_response(sock)
        assert status == 400 and b"Malformed request body" in body
        assert headers.get("connection", "").lower() == "close"
