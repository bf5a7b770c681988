"""What a request asks for: URL parameters, credentials and multipart forms.

Contract:
- ``classify(pairs)`` splits URL (and form) parameters into the HTTP-layer ones (which are
  never SET in the engine: query, database, default_format, decompress, compress, query_id,
  session_*, user, password, quota_key, role, default_role, buffer_size,
  wait_end_of_query, enable_http_compression, http_zlib_compression_level,
  http_native_compression_disable_checksumming_on_decompress, stacktrace,
  client_protocol_version), query parameters (``param_*``, prefix stripped) and
  settings (everything else; the last value of a repeated name wins; ``readonly`` is
  kept apart because it must be applied last). Invalid setting names -> 115,
  invalid session_timeout -> 374, roles -> 511 (chDB has no access storage).
- ``credentials(headers, pairs)`` takes the user and password from
  X-ClickHouse-User/X-ClickHouse-Key, else the user/password parameters, else HTTP Basic;
  the default is ``default`` with an empty password. Bearer tokens -> 516.
- ``parse_multipart(body, content_type)`` returns the form fields as (name, filename, value).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from .errors import ClickHouseError

HTTP_LAYER = frozenset({
    "query", "database", "default_format", "decompress", "compress", "query_id",
    "session_id", "session_timeout", "session_check", "user", "password", "quota_key",
    "role", "default_role", "buffer_size", "wait_end_of_query", "enable_http_compression",
    "http_zlib_compression_level", "http_native_compression_disable_checksumming_on_decompress",
    "stacktrace", "client_protocol_version",
})

DEFAULT_SESSION_TIMEOUT = 60
MAX_SESSION_TIMEOUT = 3600
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


@dataclass
class RequestParams:
    query: str | None = None
    database: str | None = None
    default_format: str = "TabSeparated"
    decompress: bool = False
    compress: bool = False
    query_id: str | None = None
    session_id: str | None = None
    session_timeout: int = DEFAULT_SESSION_TIMEOUT
    session_check: bool = False
    enable_http_compression: bool = True
    zlib_level: int = 3
    verify_checksums: bool = True
    readonly: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def classify(pairs: list[tuple[str, str]]) -> RequestParams:
    rp = RequestParams()
    last: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("param_") and len(name) > 6:
            rp.params[name[6:]] = value
        elif name in ("role", "default_role"):
            if value:
                raise ClickHouseError(
                    511, f"There is no role `{value}` in user directories "
                         "(this front has no access storage; roles are not supported)")
        elif name in HTTP_LAYER:
            last[name] = value
        elif name == "readonly":
            rp.readonly = value
        else:
            if not _SETTING_NAME.match(name):
                raise ClickHouseError(115, f"Unknown setting '{name}'")
            rp.settings.pop(name, None)  # keep the order of the last occurrence
            rp.settings[name] = value
    rp.query = last.get("query")
    rp.database = last.get("database") or None
    rp.default_format = last.get("default_format") or "TabSeparated"
    rp.decompress = _flag(last.get("decompress"))
    rp.compress = _flag(last.get("compress"))
    rp.query_id = last.get("query_id") or None
    rp.session_id = last.get("session_id") or None
    rp.session_check = _flag(last.get("session_check"))
    rp.enable_http_compression = _flag(last.get("enable_http_compression"), True)
    rp.verify_checksums = not _flag(
        last.get("http_native_compression_disable_checksumming_on_decompress"))
    if "session_timeout" in last and last["session_timeout"] != "":
        raw = last["session_timeout"]
        try:
            timeout = int(raw)
        except ValueError:
            raise ClickHouseError(374, f"Invalid session timeout: '{raw}'") from None
        if timeout < 0 or timeout > MAX_SESSION_TIMEOUT:
            raise ClickHouseError(
                374, f"Session timeout '{timeout}' is larger than max_session_timeout: "
                     f"{MAX_SESSION_TIMEOUT}. Maximum session timeout could be modified "
                     "in configuration file.")
        rp.session_timeout = timeout
    if last.get("http_zlib_compression_level"):
        try:
            rp.zlib_level = int(last["http_zlib_compression_level"])
        except ValueError:
            raise ClickHouseError(
                6, "Cannot parse http_zlib_compression_level: "
                   f"'{last['http_zlib_compression_level']}'") from None
    return rp


def credentials(headers, pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """The (user, password) the request authenticates with (see module docstring)."""
    h_user = headers.get("X-ClickHouse-User")
    h_key = headers.get("X-ClickHouse-Key")
    if h_user is not None or h_key is not None:
        return (h_user or "default", h_key or "")
    p_user = p_password = None
    for name, value in pairs:
        if name == "user":
            p_user = value
        elif name == "password":
            p_password = value
    if p_user is not None or p_password is not None:
        return (p_user or "default", p_password or "")
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ClickHouseError(516, "Invalid HTTP Basic authorization header") from None
            user, _, password = decoded.partition(":")
            return (user or "default", password)
        if scheme.lower() == "bearer":
            raise ClickHouseError(
                516, "Bearer (JWT) authentication is not supported by this front; "
                     "use a user and password")
        raise ClickHouseError(516, f"Unsupported HTTP authorization scheme '{scheme}'")
    return ("default", "")


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    m = _BOUNDARY.search(content_type)
    if not m:
        raise ClickHouseError(36, "multipart/form-data request without a boundary")
    boundary = (m.group(1) or m.group(2)).encode("latin-1")
    delim = b"--" + boundary
    pos = body.find(delim)
    if pos < 0:
        raise ClickHouseError(36, "Malformed multipart/form-data body: no boundary found")
    fields = []
    pos += len(delim)
    while True:
        if body.startswith(b"--", pos):
            break  # closing delimiter
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        head_end = body.find(b"\r\n\r\n", pos)
        sep = 4
        if head_end < 0:
            head_end, sep = body.find(b"\n\n", pos), 2
        if head_end < 0:
            raise ClickHouseError(36, "Malformed multipart/form-data body: part without headers")
        headers = body[pos:head_end].decode("utf-8", "replace")
        content_start = head_end + sep
        nxt = body.find(b"\r\n" + delim, content_start)
        skip = 2
        if nxt < 0:
            nxt, skip = body.find(b"\n" + delim, content_start), 1
        if nxt < 0:
            raise ClickHouseError(36, "Malformed multipart/form-data body: unterminated part")
        name = filename = None
        for line in headers.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                for pm in _DISPOSITION_PARAM.finditer(value):
                    pval = pm.group(2) if pm.group(2) is not None else pm.group(3)
                    if pm.group(1).lower() == "name":
                        name = pval
                    elif pm.group(1).lower() == "filename":
                        filename = pval
        if name is None:
            raise ClickHouseError(36, "Malformed multipart/form-data body: part without a name")
        fields.append((name, filename, body[content_start:nxt]))
        pos = nxt + skip + len(delim)
    return fields
