"""Process lifecycle: the CLI line, persistence across restarts, SIGTERM/SIGINT exit 0."""

from __future__ import annotations

import signal
import socket
import uuid

from conftest import FrontProcess


def test_restart_keeps_tables_and_signals_exit_zero(tmp_path):
    data, log = tmp_path / "data" / "nested", tmp_path / "front.log"
    db = "p_" + uuid.uuid4().hex[:12]

    first = FrontProcess(data, log)
    assert first.first_line == f"chfront listening on 127.0.0.1:{first.port}\n"
    c = first.client()
    c.ok(f"CREATE DATABASE {db}")
    c.ok(f"CREATE TABLE {db}.t (a UInt32) ENGINE = MergeTree ORDER BY a")
    c.ok(f"INSERT INTO {db}.t SELECT number FROM numbers(1000)")
    # leave this keep-alive connection idle and open: shutdown must not wait for it
    assert first.stop(signal.SIGTERM, timeout=30) == 0
    c.close()

    second = FrontProcess(data, log)
    c = second.client()
    assert c.ok(f"SELECT count(), sum(a) FROM {db}.t") == b"1000\t499500\n"
    c.close()
    assert second.stop(signal.SIGINT, timeout=30) == 0
    assert "stopped" in log.read_text()


def test_request_in_flight_finishes_on_sigterm(tmp_path):
    front = FrontProcess(tmp_path / "data", tmp_path / "front.log")
    body = b"SELECT 'finished'"
    with socket.create_connection(("127.0.0.1", front.port), timeout=60) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = sock.recv(1024)
            assert data
            interim += data
        assert interim.startswith(b"HTTP/1.1 100 Continue")  # the request is in flight
        front.proc.send_signal(signal.SIGTERM)
        sock.sendall(body)
        response = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 200 ")
    # (the server closed the connection after the response: the recv loop saw EOF)
    assert response.endswith(b"\r\n\r\nfinished\n")
    assert front.stop(timeout=30) == 0
