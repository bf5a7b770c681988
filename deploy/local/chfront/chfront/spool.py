"""Request bodies spooled completely before the engine is touched.

Contract: ``BodySpool`` keeps up to 64 MiB in memory and spills the rest to a temporary
file; writing past ``limit`` (16 GiB by default) raises ClickHouseError 229 (HTTP 413).
``read_range`` / ``iter_pieces`` read it back; ``close`` removes the file.
"""

from __future__ import annotations

import tempfile

from .errors import ClickHouseError

MEMORY_LIMIT = 64 << 20
BODY_LIMIT = 16 << 30
PIECE = 1 << 20


class BodySpool:
    def __init__(self, limit: int = BODY_LIMIT, memory_limit: int = MEMORY_LIMIT):
        self._file = tempfile.SpooledTemporaryFile(max_size=memory_limit, prefix="chfront-body-")
        self.size = 0
        self.limit = limit

    def write(self, data) -> None:
        if not data:
            return
        if self.size + len(data) > self.limit:
            raise ClickHouseError(
                229, f"Request body is too large: more than {self.limit} bytes "
                     "(the limit of this front)")
        self._file.write(data)
        self.size += len(data)

    def read_range(self, start: int = 0, end: int | None = None) -> bytes:
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return b""
        self._file.seek(start)
        return self._file.read(end - start)

    def iter_pieces(self, start: int = 0, piece: int = PIECE):
        pos = start
        while pos < self.size:
            self._file.seek(pos)
            data = self._file.read(min(piece, self.size - pos))
            if not data:
                break
            pos += len(data)
            yield data

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
