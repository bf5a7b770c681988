"""chfront: ClickHouse's HTTP interface over the in-process chDB engine.

A single-machine / CI stand-in for clickhouse-server that the Rust ``clickhouse`` crate and
curl can talk to. Modules: ``__main__`` (CLI), ``server`` (HTTP), ``request`` (parameters,
auth, multipart), ``engine`` (chDB, sessions, settings scoping), ``compression`` (native
blocks, HTTP encodings), ``sqlscan`` (FORMAT clauses), ``spool`` (request bodies),
``errors`` (ClickHouse error codes and bodies).
"""

__version__ = "0.1.0"
