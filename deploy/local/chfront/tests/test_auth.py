"""Authentication against a front started with --user/--password; secrets stay out of logs."""

from __future__ import annotations

import base64

import pytest

from conftest import FrontProcess

USER, PASSWORD = "analyst", "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("secured")
    proc = FrontProcess(base / "data", base / "front.log",
                        ["--user", USER, "--password", PASSWORD])
    yield proc
    assert proc.stop() == 0


def test_credentials_sources(secured):
    c = secured.client()
    # X-ClickHouse-User / X-ClickHouse-Key
    r = c.request("POST", "/", body=b"SELECT currentUser() != ''",
                  headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD})
    assert r.status == 200 and r.body == b"1\n"
    # user/password URL parameters
    r = c.request("POST", "/", body=b"SELECT 1", params={"user": USER, "password": PASSWORD})
    assert r.status == 200
    # HTTP Basic
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    r = c.request("GET", "/", params={"query": "SELECT 2"},
                  headers={"Authorization": f"Basic {token}"})
    assert r.status == 200 and r.body == b"2\n"
    c.close()


def test_failures(secured):
    c = secured.client()
    cases = [
        {},                                                   # default user, no password
        {"X-ClickHouse-User": USER, "X-ClickHouse-Key": "wrong"},
        {"X-ClickHouse-User": "nobody", "X-ClickHouse-Key": PASSWORD},
        {"Authorization": "Bearer some.jwt.token"},
        {"Authorization": "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()},
    ]
    for headers in cases:
        r = c.request("POST", "/", body=b"SELECT 1", headers=headers)
        assert (r.status, r.code) == (403, 516), (headers, r)
        assert "AUTHENTICATION_FAILED" in r.text
    r = c.request("POST", "/", body=b"SELECT 1", params={"user": USER, "password": "bad"})
    assert (r.status, r.code) == (403, 516)
    # a large body sent with bad credentials is drained: the client reads the error and
    # the connection stays usable
    r = c.request("POST", "/", body=b"x" * 3_000_000, headers={"X-ClickHouse-Key": "bad"})
    assert r.code == 516
    r = c.request("POST", "/", body=b"SELECT 3",
                  headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD})
    assert r.body == b"3\n"
    # health checks need no credentials
    assert c.request("GET", "/ping").status == 200
    c.close()


def test_password_never_logged(secured):
    c = secured.client()
    c.request("POST", "/", body=b"SELECT 1", params={"user": USER, "password": PASSWORD})
    c.request("POST", "/", body=b"SELECT 1", params={"user": USER, "password": "typo-secret"})
    c.close()
    log = secured.log_file.read_text()
    assert "password=***" in log
    assert PASSWORD not in log and "typo-secret" not in log
    assert " POST /?user=analyst&password=*** 200 " in log
    assert " 403 code=516 " in log
