"""Fixtures: a chfront subprocess on a free port, a small HTTP client, random databases.

The front is started with ``--port 0``; its port is read from the one line it prints, and
readiness is established by polling ``GET /ping``.
"""

from __future__ import annotations

import http.client
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

FRONT_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def code(self) -> int | None:
        value = self.headers.get("X-ClickHouse-Exception-Code")
        return int(value) if value is not None else None

    def __repr__(self):
        return f"<Response {self.status} code={self.code} body={self.body[:300]!r}>"


class Client:
    """One keep-alive HTTP connection to the front."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.port = port
        self.auth = {}
        if user is not None:
            self.auth["X-ClickHouse-User"] = user
        if password is not None:
            self.auth["X-ClickHouse-Key"] = password
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str = "/", body=None, params=None,
                headers=None, auth: bool = True) -> Response:
        if params:
            path = path + ("&" if "?" in path else "?") + urlencode(params)
        hdrs = dict(self.auth) if auth else {}
        hdrs.update(headers or {})
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())

    def post(self, sql, params=None, headers=None, path="/") -> Response:
        body = sql.encode() if isinstance(sql, str) else sql
        return self.request("POST", path, body=body, params=params, headers=headers)

    def get(self, sql: str, params=None, headers=None) -> Response:
        p = {"query": sql}
        p.update(params or {})
        return self.request("GET", "/", params=p, headers=headers)

    def ok(self, sql, params=None, headers=None) -> bytes:
        r = self.post(sql, params=params, headers=headers)
        assert r.status == 200 and r.code is None, r
        return r.body

    def close(self):
        self.conn.close()


class FrontProcess:
    def __init__(self, data_dir: Path, log_file: Path, extra: list[str] = ()):
        self.data_dir = data_dir
        self.log_file = log_file
        cmd = [sys.executable, "-m", "chfront", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), "--log-file", str(log_file), *extra]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(FRONT_DIR) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, cwd=FRONT_DIR, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()),
                         daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT).decode()
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError("chfront printed nothing within the start timeout") from None
        if not line.startswith("chfront listening on 127.0.0.1:"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"chfront did not start: {line!r} {err.decode()[-2000:]}")
        self.first_line = line
        self.port = int(line.rsplit(":", 1)[1])
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chfront exited with {self.proc.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/ping")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and body == b"Ok.\n":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("chfront did not answer /ping")

    def client(self, **kw) -> Client:
        return Client(self.port, **kw)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def front(tmp_path_factory):
    base = tmp_path_factory.mktemp("front")
    proc = FrontProcess(base / "data", base / "front.log")
    yield proc
    assert proc.stop() == 0


@pytest.fixture
def client(front):
    c = front.client()
    yield c
    c.close()


@pytest.fixture
def db(client):
    name = "t_" + uuid.uuid4().hex[:16]
    client.ok(f"CREATE DATABASE {name}")
    yield name
    client.ok(f"DROP DATABASE IF EXISTS {name}")
