"""ClickHouse's HTTP interface in front of the chDB engine.

Contract (see deploy/local/chfront/README.md and the shared contract document):
- ``GET|HEAD /`` without ``query``, ``/ping`` and ``/replicas_status`` answer ``200 Ok.\\n``.
  Queries are ``POST <any path>`` or ``GET|HEAD <any path>?query=``. Anything else: 404.
- HTTP/1.1 keep-alive (idle timeout KEEP_ALIVE_TIMEOUT s, announced in ``Keep-Alive``),
  chunked and Content-Length request bodies, ``Expect: 100-continue``, TCP_NODELAY.
- The whole request body is read (and decoded: Content-Encoding, then ``decompress=1``
  native blocks) into a spool before the engine lock is taken. When an error is decided
  before the body is read, the body is drained first so the client reads the error.
- Results are buffered: an error is always a non-200 status with
  ``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body.
- One log line per request: client, method, path (password values masked), status,
  exception code, duration. Passwords and X-ClickHouse-Key are never logged.
"""

from __future__ import annotations

import email.utils
import hmac
import http
import json
import logging
import re
import socket
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import compression
from .engine import Engine, Job
from .errors import ClickHouseError
from .request import classify, credentials, parse_multipart
from .spool import BodySpool
from .sqlscan import find_insert_format, find_output_format

log = logging.getLogger("chfront")

KEEP_ALIVE_TIMEOUT = 10      # s a connection may stay idle between requests
IO_TIMEOUT = 60              # s without progress while reading a body / writing a piece
READ_PIECE = 256 << 10
WRITE_PIECE = 1 << 20
HEAD_LIMIT = 1 << 20         # bytes of a body examined for "INSERT ... FORMAT X"
FORMAT_SCAN_LIMIT = 1 << 20  # queries longer than this are not scanned for FORMAT
LOG_PATH_LIMIT = 2000

NO_HANDLE = ("There is no handle {path}\n\n"
             "Use / or /ping for health checks.\n"
             "Or /replicas_status for more sophisticated health checks.\n\n"
             "Send queries from your program with POST method or GET /?query=...\n")


class BodyError(Exception):
    """The request body is not valid HTTP framing; the connection cannot be reused."""


def content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return ("text/csv; charset=UTF-8; header=present" if "withnames" in f
                else "text/csv; charset=UTF-8; header=absent")
    if f.startswith("json") or f in ("ndjson", "jsonlines"):
        if "eachrow" in f or f in ("ndjson", "jsonlines") or f.startswith("jsonlines"):
            return "application/x-ndjson; charset=UTF-8"
        return "application/json; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    if f == "markdown":
        return "text/markdown; charset=UTF-8"
    if f.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "protobuf",
                     "capnproto", "msgpack", "bson", "npy", "rawblob", "one", "lineasstring")):
        if f.startswith("lineasstring"):
            return "text/plain; charset=UTF-8"
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _header_value(value) -> str:
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.encode("latin-1", "replace").decode("latin-1")


_PASSWORD_IN_QUERY = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


def loggable_path(raw_path: str) -> str:
    path, sep, query = raw_path.partition("?")
    if sep:
        path = path + "?" + _PASSWORD_IN_QUERY.sub(r"\1\2***", query)
    if len(path) > LOG_PATH_LIMIT:
        path = path[:LOG_PATH_LIMIT] + "..."
    return path


class BodyReader:
    """Reads one request body (Content-Length or chunked) in pieces; keeps its position."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        te = (headers.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        self._chunk_left = 0
        self.done = False
        self.remaining = 0
        if not self.chunked:
            cl = headers.get("Content-Length")
            if cl:
                try:
                    self.remaining = int(cl)
                except ValueError:
                    raise BodyError(f"invalid Content-Length {cl!r}") from None
                if self.remaining < 0:
                    raise BodyError(f"invalid Content-Length {cl!r}")
            self.done = self.remaining == 0

    def read_piece(self) -> bytes:
        """The next piece of the body, b'' at its end."""
        if self.done:
            return b""
        if not self.chunked:
            data = self._rfile.read(min(self.remaining, READ_PIECE))
            if not data:
                raise ConnectionError("client closed the connection inside the body")
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection inside a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(f"invalid chunk size line {line[:40]!r}") from None
            if size == 0:
                while True:  # trailer section
                    trailer = self._rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.done = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(self._chunk_left, READ_PIECE))
        if not data:
            raise ConnectionError("client closed the connection inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.readline(65537) not in (b"\r\n", b"\n"):
            raise BodyError("chunk not followed by CRLF")
        return data

    def drain(self) -> None:
        while self.read_piece():
            pass


class Tracker:
    """Open connections and whether each is busy, for a graceful shutdown."""

    def __init__(self):
        self._cond = threading.Condition()
        self._conns: dict[object, bool] = {}
        self.stopping = False

    def add(self, handler):
        with self._cond:
            self._conns[handler] = False

    def remove(self, handler):
        with self._cond:
            self._conns.pop(handler, None)
            self._cond.notify_all()

    def set_busy(self, handler, busy: bool) -> bool:
        """Marks a connection; returns False when the server is stopping and it is idle."""
        with self._cond:
            if self.stopping and busy is False:
                return False
            self._conns[handler] = busy
            return True

    def stop(self, timeout: float) -> None:
        with self._cond:
            self.stopping = True
            for handler, busy in self._conns.items():
                if not busy:
                    try:
                        handler.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._cond.wait_for(lambda: not self._conns, timeout)


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, engine: Engine, user: str, password: str):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.engine = engine
        self.user = user
        self.password = password
        self.tracker = Tracker()
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chfront"
    sys_version = ""
    disable_nagle_algorithm = True

    # ------------------------------------------------------------------ connection loop

    def setup(self):
        super().setup()
        self.server.tracker.add(self)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.tracker.remove(self)

    def handle_one_request(self):
        tracker = self.server.tracker
        try:
            self.connection.settimeout(KEEP_ALIVE_TIMEOUT)
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not tracker.set_busy(self, True):
            self.close_connection = True
            return
        try:
            self.connection.settimeout(IO_TIMEOUT)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.command = ""
                self.request_version = "HTTP/1.1"
                self.close_connection = True
                self._send_plain(414, b"Request line is too long (limit 64 KiB)\n")
                return
            if not self.parse_request():
                return
            if tracker.stopping:
                self.close_connection = True
            self._dispatch()
        except (ConnectionError, TimeoutError) as e:
            log.info("%s connection dropped: %s", self.client_address[0], e)
            self.close_connection = True
        finally:
            if tracker.stopping:
                self.close_connection = True
            tracker.set_busy(self, False)

    def log_message(self, format, *args):  # BaseHTTPRequestHandler's own messages
        log.info("%s %s", self.client_address[0], format % args)

    def log_request(self, code="-", size="-"):
        pass  # one line per request is written by _dispatch

    # ------------------------------------------------------------------ responses

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._status = status
        reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}"]
        lines += [f"{k}: {_header_value(v)}" for k, v in headers]
        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        else:
            lines.append("Connection: Keep-Alive")
            lines.append(f"Keep-Alive: timeout={KEEP_ALIVE_TIMEOUT}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            body = b""
        if len(body) <= 65536:
            self.wfile.write(head + bytes(body))
            return
        self.wfile.write(head)
        view = memoryview(body)
        for i in range(0, len(view), WRITE_PIECE):
            self.wfile.write(view[i:i + WRITE_PIECE])

    def _send_plain(self, status: int, text: bytes) -> None:
        self._send(status, [("Content-Type", "text/plain; charset=UTF-8")], text)

    def _send_error(self, err: ClickHouseError, query_id: str | None) -> None:
        self._code = err.code
        engine = self.server.engine
        headers = [("Content-Type", "text/plain; charset=UTF-8"),
                   ("X-ClickHouse-Exception-Code", str(err.code)),
                   ("X-ClickHouse-Server-Display-Name", engine.display_name)]
        if query_id:
            headers.append(("X-ClickHouse-Query-Id", query_id))
        self._send(err.status, headers, err.body(engine.version))

    # ------------------------------------------------------------------ routing

    def _dispatch(self) -> None:
        started = time.perf_counter()
        self._status, self._code = 0, None
        method = self.command
        split = urlsplit(self.path)
        path = split.path or "/"
        pairs = parse_qsl(split.query, keep_blank_values=True)
        try:
            reader = BodyReader(self.rfile, self.headers)
            has_query = any(name == "query" for name, _ in pairs)
            if method in ("GET", "HEAD") and (path in ("/ping", "/replicas_status")
                                              or (path == "/" and not has_query)):
                reader.drain()
                self._send_plain(200, b"Ok.\n")
            elif method == "POST" or (method in ("GET", "HEAD") and has_query):
                self._query(reader, pairs)
            else:
                reader.drain()
                self._send_plain(404, NO_HANDLE.format(path=path).encode("utf-8", "replace"))
        except BodyError as e:
            self.close_connection = True
            self._send_plain(400, f"Malformed request body: {e}\n".encode())
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            code = f" code={self._code}" if self._code else ""
            log.info("%s %s %s %s%s %.1fms", self.client_address[0], method,
                     loggable_path(self.path), self._status or "-", code, elapsed)

    def _query(self, reader: BodyReader, pairs: list[tuple[str, str]]) -> None:
        server = self.server
        engine: Engine = server.engine
        query_id = None
        spool = BodySpool()
        try:
            try:
                user, password = credentials(self.headers, pairs)
                if not (hmac.compare_digest(user.encode(), server.user.encode())
                        and hmac.compare_digest(password.encode(), server.password.encode())):
                    raise ClickHouseError(
                        516, f"{user}: Authentication failed: password is incorrect, "
                             "or there is no user with such name.")
                rp = classify(pairs)
                query_id = rp.query_id or str(uuid.uuid4())
                self._read_body(reader, rp, spool)
                ctype = (self.headers.get("Content-Type") or "").strip()
                multipart = ctype.lower().startswith("multipart/form-data")
                if multipart:
                    form = []
                    for name, filename, value in parse_multipart(spool.read_range(), ctype):
                        if filename is not None:
                            raise ClickHouseError(
                                48, f"External data (file '{filename}' in field '{name}') is "
                                    "not supported by this front")
                        form.append((name, value.decode("utf-8", "replace")))
                    rp = classify(pairs + form)
                    query_id = rp.query_id or query_id
                job = self._build_job(user, rp, spool, multipart)
                result = engine.run(job)
            except ClickHouseError as err:
                if not reader.done:
                    reader.drain()
                self._send_error(err, query_id)
                return
            self._send_result(rp, job, query_id, result)
        finally:
            spool.close()

    def _read_body(self, reader: BodyReader, rp, spool: BodySpool) -> None:
        decoder = compression.request_decoder(self.headers.get("Content-Encoding") or "")
        blocks = compression.BlockDecoder(rp.verify_checksums) if rp.decompress else None

        def put(data):
            if blocks is None:
                spool.write(data)
            else:
                for piece in blocks.feed(data):
                    spool.write(piece)

        while True:
            data = reader.read_piece()
            if not data:
                break
            put(decoder.feed(data) if decoder is not None else data)
        if decoder is not None:
            put(decoder.finish())
        if blocks is not None:
            blocks.finish()

    def _build_job(self, user: str, rp, spool: BodySpool, multipart: bool) -> Job:
        job = Job(user=user, fmt=rp.default_format, params=rp.params, database=rp.database,
                  settings=rp.settings, readonly=rp.readonly,
                  is_get=self.command in ("GET", "HEAD"), session_id=rp.session_id,
                  session_timeout=rp.session_timeout, session_check=rp.session_check)
        body_is_text = multipart or spool.size == 0
        if rp.query is not None:
            qbytes = rp.query.encode("utf-8")
            ins = find_insert_format(qbytes)
            if ins is not None and not qbytes[ins.name_end:].strip(b" \t\r\n;"):
                job.insert_sql = qbytes[:ins.insert_end].rstrip()
                job.insert_format = ins.format_name
                job.data = None if multipart else spool
                return job
            job.sql = qbytes if body_is_text else qbytes + b"\n" + spool.read_range()
        elif multipart:
            job.sql = b""
        else:
            head = spool.read_range(0, HEAD_LIMIT)
            ins = find_insert_format(head)
            if ins is not None:
                job.insert_sql = head[:ins.insert_end].rstrip()
                job.insert_format = ins.format_name
                job.data, job.data_start = spool, ins.data_start
                return job
            job.sql = head if spool.size <= HEAD_LIMIT else spool.read_range()
        if not job.sql.strip():
            raise ClickHouseError(62, "Empty query")
        if len(job.sql) <= FORMAT_SCAN_LIMIT:
            found = find_output_format(job.sql, self.server.engine.output_formats)
            if found:
                job.fmt = found
        return job

    def _send_result(self, rp, job: Job, query_id: str, result) -> None:
        engine: Engine = self.server.engine
        body = result.body
        if rp.compress and body:
            body = compression.encode_blocks(body)
        encoding = None
        if rp.enable_http_compression and body:
            encoding = compression.choose_response_encoding(self.headers.get("Accept-Encoding"))
            if encoding:
                body = compression.encode_response(body, encoding, rp.zlib_level)
        headers = [
            ("Content-Type", content_type(job.fmt)),
            ("X-ClickHouse-Format", job.fmt),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", rp.settings.get("session_timezone") or engine.timezone),
            ("X-ClickHouse-Server-Display-Name", engine.display_name),
            ("X-ClickHouse-Summary", json.dumps(result.summary, separators=(",", ":"))),
        ]
        if encoding:
            headers.append(("Content-Encoding", encoding))
        self._send(200, headers, body)
