"""A minimal lexer over SQL bytes, enough to find FORMAT clauses.

Contract:
- ``find_insert_format(sql)``: if ``sql`` is ``INSERT INTO <target> ... FORMAT <Name>``
  (the data, if any, follows the format name), returns ``InsertFormat`` with the byte
  offset where the ``FORMAT`` keyword starts (``sql[:insert_end]`` is the INSERT statement
  without the FORMAT clause), the format name, the offset right after the name
  (``name_end``) and the offset where inline data starts (``data_start``: after the name,
  optional spaces/tabs and at most one newline). Returns None for anything else,
  including ``INSERT ... VALUES`` and ``INSERT ... SELECT``.
- ``find_output_format(sql, known)``: the name of the last top-level ``FORMAT <Name>``
  clause whose name is in ``known`` (a dict lower-case name -> canonical name), or None.

Quoted strings ('...'), quoted identifiers ("..." and `...`), comments (-- and /* */)
and parenthesised parts are skipped, so FORMAT inside them is not taken as a clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(rb"[0-9][0-9A-Za-z_.]*")
_SPACE = re.compile(rb"[ \t\r\n\f\v]+")
# the next quote of each kind or backslash inside a quoted string
_STRING_STOP = {q: re.compile(rb"[\\" + bytes([q]) + rb"]") for q in b"'\"`"}

# token kinds
WORD, QUOTED_ID, STRING, PUNCT, NUMBER = "word", "qid", "str", "punct", "num"


@dataclass
class Token:
    kind: str
    start: int
    end: int
    text: bytes  # the word itself, the unquoted identifier, or the punctuation


def tokens(sql: bytes, start: int = 0) -> Iterator[Token]:
    """Yields tokens; stops quietly at an unterminated quote or comment."""
    i, n = start, len(sql)
    while i < n:
        c = sql[i]
        m = _SPACE.match(sql, i)
        if m:
            i = m.end()
            continue
        if sql.startswith(b"--", i):
            j = sql.find(b"\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith(b"/*", i):
            j = sql.find(b"*/", i + 2)
            if j < 0:
                return
            i = j + 2
            continue
        if c in b"'\"`":
            # Runs of plain characters are skipped by a regex (C speed): a query may carry a
            # string literal of megabytes (a list of ids) or tens of thousands of literals.
            stop = _STRING_STOP[c]
            j = i + 1
            parts = []
            while True:
                m = stop.search(sql, j)
                if m is None:
                    return  # unterminated
                k = m.start()
                parts.append(sql[j:k])
                if sql[k] == 0x5C:  # backslash escape
                    if k + 1 >= n:
                        return
                    parts.append(sql[k + 1:k + 2])
                    j = k + 2
                    continue
                if k + 1 < n and sql[k + 1] == c:  # doubled quote
                    parts.append(sql[k:k + 1])
                    j = k + 2
                    continue
                j = k
                break
            yield Token(STRING if c == 0x27 else QUOTED_ID, i, j + 1, b"".join(parts))
            i = j + 1
            continue
        m = _WORD.match(sql, i)
        if m:
            yield Token(WORD, i, m.end(), m.group())
            i = m.end()
            continue
        m = _NUMBER.match(sql, i)
        if m:
            yield Token(NUMBER, i, m.end(), m.group())
            i = m.end()
            continue
        yield Token(PUNCT, i, i + 1, sql[i:i + 1])
        i += 1


def _is_word(tok: Token | None, *words: bytes) -> bool:
    return tok is not None and tok.kind == WORD and tok.text.upper() in words


@dataclass
class InsertFormat:
    insert_end: int
    format_name: str
    name_end: int
    data_start: int


def find_insert_format(sql: bytes) -> InsertFormat | None:
    it = tokens(sql)
    tok = next(it, None)
    if not _is_word(tok, b"INSERT"):
        return None
    tok = next(it, None)
    if _is_word(tok, b"INTO"):
        tok = next(it, None)
    if _is_word(tok, b"TABLE", b"FUNCTION"):
        tok = next(it, None)
    # The target: [db.]table or a table function call; skip it so that a table
    # literally named "format" is not taken for the clause.
    if tok is None or tok.kind not in (WORD, QUOTED_ID):
        return None
    depth = 0
    prev: Token | None = tok
    for tok in it:
        if tok.kind == PUNCT:
            if tok.text in b"([{":
                depth += 1
            elif tok.text in b")]}":
                depth -= 1
            prev = tok
            continue
        if depth > 0:
            prev = tok
            continue
        if prev is not None and prev.kind == PUNCT and prev.text == b".":
            prev = tok  # db.table / db.`format`: part of the name
            continue
        if _is_word(tok, b"VALUES", b"SELECT", b"WITH", b"FROM"):
            return None
        if _is_word(tok, b"FORMAT"):
            name = next(it, None)
            if name is None or name.kind not in (WORD, QUOTED_ID):
                return None
            pos = name.end
            n = len(sql)
            while pos < n and sql[pos] in b" \t":
                pos += 1
            if sql.startswith(b"\r\n", pos):
                pos += 2
            elif pos < n and sql[pos] == 0x0A:
                pos += 1
            return InsertFormat(tok.start, name.text.decode("utf-8", "replace"), name.end, pos)
        prev = tok
    return None


def find_output_format(sql: bytes, known: dict[str, str]) -> str | None:
    found = None
    depth = 0
    it = tokens(sql)
    for tok in it:
        if tok.kind == PUNCT:
            if tok.text in b"([{":
                depth += 1
            elif tok.text in b")]}":
                depth = max(0, depth - 1)
            elif tok.text == b";":
                found = None  # the last statement decides
            continue
        if depth == 0 and _is_word(tok, b"FORMAT"):
            name = next(it, None)
            if name is not None and name.kind in (WORD, QUOTED_ID):
                canonical = known.get(name.text.decode("utf-8", "replace").lower())
                if canonical:
                    found = canonical
    return found
