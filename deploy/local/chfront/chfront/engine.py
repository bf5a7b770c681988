"""The chDB engine behind the front: one engine per process, queries serialized.

Contract:
- ``Engine(data_dir)`` opens chDB's persistent store in ``data_dir`` (created if missing)
  and keeps one base connection open for the life of the process.
- ``Engine.run(job)`` executes one request under a process-wide lock and returns a
  ``Result`` (the whole output, buffered) or raises ``ClickHouseError``.
- Scoping (chdb-core 26.9 keeps SET/USE/temporary tables per connection):
  * a request without ``session_id`` runs on a fresh connection that is closed after it,
    so URL settings, ``database``, SET, USE and temporary tables never outlive it;
  * a request with ``session_id`` runs on that session's connection (one per user and
    session id, expiring ``session_timeout`` seconds after its last use). URL settings and
    ``database`` apply to that request only and are restored afterwards, unless the
    query itself changed them; SET/USE/temporary tables in the query persist;
  * ``readonly`` can never be lowered once set, so a readonly request of a session (GET,
    or a ``readonly`` parameter) runs on a fresh connection that replays the session's
    changed settings and current database (the session's temporary tables are not
    visible there).
- Every connection first gets the baseline ``SET implicit_select=0,
  allow_introspection_functions=0`` (clickhouse-server defaults). Then ``USE database``,
  the URL settings, and ``readonly`` last (GET implies readonly=2 when it is 0).
- Inserts: ``conn.send_insert(insert_sql, format)``, ``append`` in 1 MiB pieces from the
  spooled body, ``finish``; on any error the insert is cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from .errors import ClickHouseError, from_engine, register_names
from .spool import BodySpool

log = logging.getLogger("chfront")

BASELINE = b"SET implicit_select = 0, allow_introspection_functions = 0"
# Formats that chdb's Python wrapper turns into Python objects instead of bytes.
PYTHON_ONLY_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass
class Job:
    """One request, as the engine needs it."""
    user: str
    fmt: str = "TabSeparated"
    sql: bytes | None = None                 # a query, or
    insert_sql: bytes | None = None          # an INSERT whose data is in ``data``
    insert_format: str | None = None
    data: BodySpool | None = None
    data_start: int = 0
    params: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    readonly: str | None = None              # explicit readonly parameter
    is_get: bool = False                     # GET implies readonly=2
    session_id: str | None = None
    session_timeout: int = 60
    session_check: bool = False


@dataclass
class Result:
    body: bytes
    summary: dict[str, str]


@dataclass
class _Session:
    conn: object
    timeout: int
    last_used: float


class Engine:
    def __init__(self, data_dir: str):
        import chdb  # heavy import: only when an engine is really made

        self._chdb = chdb
        self._lock = threading.Lock()
        self._closed = False
        self._path = os.path.abspath(data_dir)
        os.makedirs(self._path, exist_ok=True)
        self._base = chdb.connect(self._path)
        self._base.query(BASELINE)
        self.version = chdb.engine_version
        self.timezone = self._scalar(self._base, b"SELECT timezone()")
        self.display_name = self._scalar(self._base, b"SELECT displayName()")
        rows = self._rows(self._base, b"SELECT DISTINCT code, name FROM system.errors "
                                      b"SETTINGS system_events_show_zero_values = 1")
        register_names({int(r["code"]): r["name"] for r in rows})
        rows = self._rows(self._base, b"SELECT name FROM system.formats WHERE is_output")
        self.output_formats = {r["name"].lower(): r["name"] for r in rows}
        self._baseline_changed = self._changed_settings(self._base)
        self._sessions: dict[tuple[str, str], _Session] = {}

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _q(conn, sql, fmt: str = "TabSeparated", params=None):
        try:
            res = conn.query(sql, fmt, params=params or {})
        except Exception as e:  # chDB raises ChdbError / RuntimeError with the CH message
            raise from_engine(str(e)) from None
        if res.has_error():
            raise from_engine(res.error_message())
        return res

    def _rows(self, conn, sql: bytes) -> list[dict]:
        data = self._q(conn, sql, "JSONEachRow").bytes()
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def _scalar(self, conn, sql: bytes) -> str:
        return self._q(conn, sql, "TabSeparatedRaw").bytes().decode("utf-8").rstrip("\n")

    def _changed_settings(self, conn) -> dict[str, str]:
        rows = self._rows(conn, b"SELECT name, value FROM system.settings WHERE changed")
        return {r["name"]: r["value"] for r in rows}

    def _read_settings(self, conn, names) -> dict[str, tuple[str, bool]]:
        if not names:
            return {}
        in_list = ", ".join(quote_string(n) for n in names)
        rows = self._rows(conn, ("SELECT name, value, changed FROM system.settings "
                                 f"WHERE name IN ({in_list})").encode())
        return {r["name"]: (r["value"], bool(int(r["changed"]))) for r in rows}

    def _connect(self):
        conn = self._chdb.connect(self._path)
        try:
            self._q(conn, BASELINE)
        except Exception:
            conn.close()
            raise
        return conn

    @staticmethod
    def _close(conn) -> None:
        try:
            conn.close()
        except Exception as e:  # closing must never hide the request's own outcome
            log.warning("closing a chDB connection failed: %s", e)

    def _set(self, conn, settings: dict[str, str]) -> None:
        if settings:
            assignments = ", ".join(f"{quote_ident(k)} = {quote_string(v)}"
                                    for k, v in settings.items())
            self._q(conn, ("SET " + assignments).encode())

    def _use(self, conn, database: str) -> None:
        self._q(conn, ("USE " + quote_ident(database)).encode())

    def _apply_readonly(self, conn, job: Job, current: str = "0") -> None:
        if job.readonly is not None and job.readonly != "":
            self._set(conn, {"readonly": job.readonly})
            current = job.readonly
        if job.is_get and current.strip() in ("", "0"):
            self._set(conn, {"readonly": "2"})

    # ------------------------------------------------------------------ execution

    def run(self, job: Job) -> Result:
        if job.fmt.lower() in PYTHON_ONLY_FORMATS:
            raise ClickHouseError(73, f"Unknown output format {job.fmt}")
        with self._lock:
            if self._closed:
                raise ClickHouseError(210, "The server is shutting down")
            now = time.monotonic()
            self._expire_sessions(now)
            if job.session_id is None:
                return self._run_fresh(job)
            key = (job.user, job.session_id)
            sess = self._sessions.get(key)
            if sess is None:
                if job.session_check:
                    raise ClickHouseError(372, f"Session {job.session_id} not found")
                sess = _Session(self._connect(), job.session_timeout, now)
                self._sessions[key] = sess
            try:
                if job.is_get or (job.readonly not in (None, "")):
                    return self._run_fresh(job, replay_from=sess.conn)
                return self._run_scoped(sess.conn, job)
            finally:
                sess.timeout = job.session_timeout
                sess.last_used = time.monotonic()

    def _run_fresh(self, job: Job, replay_from=None) -> Result:
        conn = self._connect()
        try:
            readonly = "0"
            if replay_from is not None:
                changed = self._changed_settings(replay_from)
                readonly = changed.pop("readonly", "0")
                state = {k: v for k, v in changed.items()
                         if k != "database" and self._baseline_changed.get(k) != v}
                self._set(conn, state)
                database = self._scalar(replay_from, b"SELECT currentDatabase()")
                if database != "default":
                    self._use(conn, database)
                if readonly not in ("", "0"):
                    self._set(conn, {"readonly": readonly})
            if job.database:
                self._use(conn, job.database)
            self._set(conn, job.settings)
            self._apply_readonly(conn, job, readonly)
            return self._execute(conn, job)
        finally:
            self._close(conn)

    def _run_scoped(self, conn, job: Job) -> Result:
        names = list(job.settings)
        prev = self._read_settings(conn, names)
        prev_db = None
        if job.database:
            prev_db = self._scalar(conn, b"SELECT currentDatabase()")
            self._use(conn, job.database)
        applied: dict[str, tuple[str, bool]] = {}
        try:
            if names:
                try:
                    self._set(conn, job.settings)
                except ClickHouseError:
                    self._restore(conn, names, prev)
                    raise
                applied = self._read_settings(conn, names)
            return self._execute(conn, job)
        finally:
            if names:
                after = self._read_settings(conn, names)
                # a setting the query itself changed (SET in the session) is kept
                self._restore(conn, [n for n in names if after.get(n) == applied.get(n)], prev)
            if prev_db is not None:
                try:
                    if self._scalar(conn, b"SELECT currentDatabase()") == job.database:
                        self._use(conn, prev_db)
                except ClickHouseError as e:
                    log.warning("could not restore the session database: %s", e)

    def _restore(self, conn, names, prev) -> None:
        for name in names:
            value, changed = prev.get(name, ("", False))
            sql = (f"SET {quote_ident(name)} = {quote_string(value)}" if changed
                   else f"SET {quote_ident(name)} = DEFAULT")
            try:
                self._q(conn, sql.encode())
            except ClickHouseError as e:
                log.warning("could not restore setting %s of a session: %s", name, e)

    def _execute(self, conn, job: Job) -> Result:
        if job.insert_sql is not None:
            return self._insert(conn, job)
        res = self._q(conn, job.sql, job.fmt, job.params)
        body = res.bytes()
        summary = {
            "read_rows": res.storage_rows_read(),
            "read_bytes": res.storage_bytes_read(),
            "written_rows": res.rows_written(),
            "written_bytes": res.bytes_written(),
            "total_rows_to_read": res.storage_rows_read(),
            "result_rows": res.rows_read(),
            "result_bytes": res.bytes_read(),
            "elapsed_ns": int(res.elapsed() * 1e9),
        }
        return Result(body, {k: str(v) for k, v in summary.items()})

    def _insert(self, conn, job: Job) -> Result:
        try:
            ins = conn.send_insert(job.insert_sql, job.insert_format)
        except Exception as e:
            raise from_engine(str(e)) from None
        try:
            if job.data is not None:
                for piece in job.data.iter_pieces(job.data_start):
                    ins.append(piece)
            res = ins.finish()
        except Exception as e:
            try:
                ins.cancel()
            except Exception as cancel_error:
                log.warning("cancelling a failed insert failed: %s", cancel_error)
            raise from_engine(str(e)) from None
        summary = {
            "read_rows": 0, "read_bytes": 0,
            "written_rows": res.rows_written, "written_bytes": res.bytes_written,
            "total_rows_to_read": 0, "result_rows": 0, "result_bytes": 0,
            "elapsed_ns": int(res.elapsed * 1e9),
        }
        return Result(b"", {k: str(v) for k, v in summary.items()})

    # ------------------------------------------------------------------ sessions, shutdown

    def _expire_sessions(self, now: float) -> None:
        for key, sess in list(self._sessions.items()):
            if now - sess.last_used > sess.timeout:
                del self._sessions[key]
                self._close(sess.conn)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for sess in self._sessions.values():
                self._close(sess.conn)
            self._sessions.clear()
            self._close(self._base)
