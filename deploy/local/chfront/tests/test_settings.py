"""Settings scoping, database, readonly, sessions and multipart parameters."""

from __future__ import annotations

import json
import uuid


def setting(client, name: str, params=None) -> str:
    return client.ok(f"SELECT getSetting('{name}')", params=params).decode().strip()


def test_url_setting_does_not_leak(client):
    default = setting(client, "max_threads")
    assert setting(client, "max_threads", {"max_threads": "3"}) == "3"
    assert setting(client, "max_threads") == default
    # the last of repeated parameters wins
    assert client.ok("SELECT getSetting('max_threads')",
                     params=[("max_threads", "2"), ("max_threads", "5")]) == b"5\n"


def test_set_and_use_in_a_request_do_not_leak(client, db):
    default = setting(client, "max_block_size")
    assert client.ok(f"SET max_block_size = 1234; USE {db}; "
                     "SELECT getSetting('max_block_size'), currentDatabase()") \
        == f"1234\t{db}\n".encode()
    assert setting(client, "max_block_size") == default
    assert client.ok("SELECT currentDatabase()") == b"default\n"
    # temporary tables are dropped with their request
    client.ok("CREATE TEMPORARY TABLE tmp_x (a UInt8)")
    r = client.post("SELECT * FROM tmp_x")
    assert r.code == 60


def test_baseline_like_clickhouse_server(client):
    assert setting(client, "implicit_select") in ("0", "false")
    assert setting(client, "allow_introspection_functions") in ("0", "false")


def test_database_parameter(client, db):
    client.ok("CREATE TABLE t (a UInt8) ENGINE = Memory", params={"database": db})
    assert client.ok("SELECT currentDatabase()", params={"database": db}) == f"{db}\n".encode()
    assert client.ok("EXISTS TABLE t", params={"database": db}) == b"1\n"
    assert client.ok("SELECT currentDatabase()") == b"default\n"
    r = client.post("SELECT 1", params={"database": "no_such_db_" + uuid.uuid4().hex[:8]})
    assert (r.status, r.code) == (404, 81)


def test_readonly_get(client, db):
    r = client.get(f"CREATE TABLE {db}.x (a UInt8) ENGINE = Memory")
    assert r.code == 164 and r.status == 500
    assert "readonly" in r.text.lower()
    assert client.get("SELECT 1").body == b"1\n"
    # readonly=2 still allows changing settings
    assert client.get("SELECT getSetting('readonly')").body == b"2\n"
    assert client.get("SELECT 1", params={"max_threads": "1"}).status == 200
    # POST is not readonly, and GET's readonly did not stick
    client.ok(f"CREATE TABLE {db}.x (a UInt8) ENGINE = Memory")
    assert setting(client, "readonly") == "0"


def test_readonly_parameter(client, db):
    client.ok(f"CREATE TABLE {db}.t (a UInt8) ENGINE = Memory")
    r = client.post(f"INSERT INTO {db}.t VALUES (1)", params={"readonly": "1"})
    assert r.code == 164
    r = client.post(b"1\n", params={"readonly": "1", "query": f"INSERT INTO {db}.t FORMAT TSV"})
    assert r.code == 164
    assert client.ok(f"SELECT count() FROM {db}.t") == b"0\n"
    assert setting(client, "readonly") == "0"


def test_sessions_keep_set_use_and_temporary_tables(front, db):
    c = front.client()
    sid = "s-" + uuid.uuid4().hex
    p = {"session_id": sid}
    c.ok(f"SET max_block_size = 4321", params=p)
    c.ok(f"USE {db}", params=p)
    c.ok("CREATE TEMPORARY TABLE tmp_s (a UInt8)", params=p)
    c.ok("INSERT INTO tmp_s VALUES (7)", params=p)
    assert c.ok("SELECT getSetting('max_block_size'), currentDatabase(), (SELECT a FROM tmp_s)",
                params=p) == f"4321\t{db}\t7\n".encode()
    # URL settings of a session request apply to that request only
    assert c.ok("SELECT getSetting('max_threads')", params={**p, "max_threads": "3"}) == b"3\n"
    assert c.ok("SELECT getSetting('max_threads') != '3'", params=p) == b"1\n"
    # database parameter too
    assert c.ok("SELECT currentDatabase()", params={**p, "database": "system"}) == b"system\n"
    assert c.ok("SELECT currentDatabase()", params=p) == f"{db}\n".encode()
    # a GET in the session is readonly but sees the session's settings and database
    r = c.get("SELECT getSetting('max_block_size'), currentDatabase(), getSetting('readonly')",
              params=p)
    assert r.body == f"4321\t{db}\t2\n".encode()
    r = c.get(f"CREATE TABLE {db}.ro (a UInt8) ENGINE = Memory", params=p)
    assert r.code == 164
    # ...and the session is not readonly afterwards
    c.ok("INSERT INTO tmp_s VALUES (8)", params=p)
    # other requests see none of it
    assert c.ok("SELECT getSetting('max_block_size') != '4321', currentDatabase()") \
        == b"1\tdefault\n"
    assert c.post("SELECT * FROM tmp_s").code == 60
    other = {"session_id": "s-" + uuid.uuid4().hex}
    assert c.post("SELECT * FROM tmp_s", params=other).code == 60
    # the same temporary table name in another session is independent
    c.ok("CREATE TEMPORARY TABLE tmp_s (s String)", params=other)
    assert c.ok("SELECT count() FROM tmp_s", params=p) == b"2\n"
    c.close()


def test_session_check_and_timeout(client):
    r = client.post("SELECT 1", params={"session_id": "never-" + uuid.uuid4().hex,
                                        "session_check": "1"})
    assert r.code == 372 and "not found" in r.text
    r = client.post("SELECT 1", params={"session_id": "x", "session_timeout": "abc"})
    assert r.code == 374
    r = client.post("SELECT 1", params={"session_id": "x", "session_timeout": "999999"})
    assert r.code == 374


def _multipart(fields: list[tuple[str, str]], boundary: str) -> bytes:
    out = b""
    for name, value in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_params_like_the_crate(client):
    boundary = "clickhouse-rs-boundary-" + uuid.uuid4().hex[:16]
    body = _multipart([("query", "SELECT {a: UInt8} + 1 AS a, {z: String} AS z"),
                       ("param_a", "41"), ("param_z", "line1\\nline2")], boundary)
    r = client.post(body, params={"default_format": "JSONEachRow"},
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status == 200, r
    assert json.loads(r.body) == {"a": 42, "z": "line1\nline2"}

    # external data files are refused, not ignored
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"ext\"; "
            f"filename=\"ext.tsv\"\r\n\r\n1\r\n--{boundary}--\r\n").encode()
    r = client.post(body, params={"query": "SELECT 1"},
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (r.status, r.code) == (501, 48)


def test_roles_are_refused(client):
    r = client.post("SELECT 1", params={"role": "analyst"})
    assert r.code == 511
