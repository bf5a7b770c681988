"""ClickHouse-style errors: codes, names, HTTP statuses and response bodies.

Contract:
- ``ClickHouseError(code, message)`` is the only exception type the front turns into
  an error response. ``message`` is the bare text (no "Code: N." prefix, no
  "(NAME)" / "(version ...)" suffix).
- ``from_engine(text)`` parses a chDB error string ("Code: N. DB::Exception: ...",
  possibly prefixed by "Streaming insert ... failed: " and possibly nested) into
  a ``ClickHouseError``. Text without a code becomes code 1001 (STD_EXCEPTION).
- ``http_status(code)`` follows ClickHouse's exceptionCodeToHTTPStatus.
- ``ClickHouseError.body(version)`` renders
  ``Code: N. DB::Exception: <msg> (NAME) (version <version> (official build))\\n``.
"""

from __future__ import annotations

import re

# Names of the codes the front raises itself; the engine's full list
# (system.errors) is merged in at startup via ``register_names``.
_NAMES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    33: "CANNOT_READ_ALL_DATA",
    36: "BAD_ARGUMENTS",
    40: "CHECKSUM_DOESNT_MATCH",
    48: "NOT_IMPLEMENTED",
    62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT",
    89: "UNKNOWN_COMPRESSION_METHOD",
    115: "UNKNOWN_SETTING",
    164: "READONLY",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    229: "QUERY_IS_TOO_LARGE",
    246: "CORRUPTED_DATA",
    271: "CANNOT_DECOMPRESS",
    372: "SESSION_NOT_FOUND",
    374: "INVALID_SESSION_TIMEOUT",
    497: "ACCESS_DENIED",
    511: "UNKNOWN_ROLE",
    516: "AUTHENTICATION_FAILED",
    1000: "POCO_EXCEPTION",
    1001: "STD_EXCEPTION",
    1002: "UNKNOWN_EXCEPTION",
}

_STATUS: dict[int, int] = {}
for _status, _codes in {
    401: (194,),
    403: (192, 193, 516, 512, 497),
    400: (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8,
          167, 168, 223, 62, 117, 53, 321),
    404: (60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511),
    413: (229,),
    501: (48,),
    503: (209, 76, 439),
    411: (381,),
    408: (159,),
    415: (779,),
}.items():
    for _code in _codes:
        _STATUS[_code] = _status


def register_names(names: dict[int, str]) -> None:
    """Adds the engine's code -> name table (from system.errors)."""
    for code, name in names.items():
        _NAMES.setdefault(int(code), name)


def code_name(code: int) -> str:
    return _NAMES.get(code, "UNKNOWN_EXCEPTION")


def http_status(code: int) -> int:
    return _STATUS.get(code, 500)


class ClickHouseError(Exception):
    """An error with a ClickHouse error code; rendered as a ClickHouse error response."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    @property
    def name(self) -> str:
        return code_name(self.code)

    @property
    def status(self) -> int:
        return http_status(self.code)

    def body(self, version: str) -> bytes:
        text = (f"Code: {self.code}. DB::Exception: {self.message} ({self.name}) "
                f"(version {version} (official build))\n")
        return text.encode("utf-8", "replace")

    def __str__(self) -> str:
        return f"Code: {self.code}. {self.message} ({self.name})"


_CODE_RE = re.compile(r"Code: (\d+)\. DB::Exception: ")
_VERSION_RE = re.compile(r" \(version \d+(?:\.\d+)*[^()]*(?:\([^()]*\))?\)")


def from_engine(text: str) -> ClickHouseError:
    """Parses a chDB error message into a ClickHouseError (see module docstring)."""
    text = text.strip()
    first = _CODE_RE.search(text)
    if first is None:
        return ClickHouseError(1001, text or "Unknown error in the engine")
    code = int(first.group(1))
    # chDB sometimes wraps the same exception several times:
    # "Code: 73. DB::Exception: Code: 73. DB::Exception: <msg>. (NAME) (version ..). (NAME)".
    # Keep the innermost message of the first code; drop wrappers, names and versions.
    start = first.end()
    while True:
        inner = _CODE_RE.match(text, start)
        if inner is None or int(inner.group(1)) != code:
            break
        start = inner.end()
    message = _VERSION_RE.sub("", text[start:]).rstrip()
    name = code_name(code) if code in _NAMES else None
    if name is None:
        m = re.search(r" \(([A-Z0-9_]+)\)$", message)
        if m:
            name = m.group(1)
            _NAMES.setdefault(code, name)
    if name:
        suffix = f" ({name})"
        dotted = f". ({name})"
        while message.endswith(dotted) and message[: -len(dotted)].endswith(suffix):
            message = message[: -len(dotted)]
        if message.endswith(suffix):
            message = message[: -len(suffix)]
    return ClickHouseError(code, message)
