"""Entry point: ``python -m chfront --host H --port P --data-dir DIR [--user U --password P]
[--log-file FILE]``.

Contract: opens the chDB store in DIR (created if missing), listens on H:P (P may be 0 for
any free port), then prints exactly one line ``chfront listening on H:PORT`` to stdout and
flushes it. SIGTERM/SIGINT: stop accepting, let requests in flight finish (up to
SHUTDOWN_GRACE seconds), close the engine and exit 0. Logs go to FILE or stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

SHUTDOWN_GRACE = 60.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m chfront",
        description="ClickHouse HTTP interface in front of an in-process chDB engine")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--data-dir", required=True, help="chDB's persistent data directory")
    ap.add_argument("--user", default=None, help="the only user (default: default)")
    ap.add_argument("--password", default=None, help="its password (default: empty)")
    ap.add_argument("--log-file", default=None, help="append logs here instead of stderr")
    args = ap.parse_args(argv)

    handler = (logging.FileHandler(args.log_file) if args.log_file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("chfront")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False

    from .engine import Engine
    from .server import FrontServer

    engine = Engine(args.data_dir)
    try:
        server = FrontServer((args.host, args.port), engine,
                             args.user if args.user is not None else "default",
                             args.password if args.password is not None else "")
    except OSError as e:
        root.error("cannot listen on %s:%s: %s", args.host, args.port, e)
        engine.close()
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame):
        root.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                               name="chfront-accept", daemon=True)
    serving.start()
    port = server.server_address[1]
    root.info("chfront %s listening on %s:%d, data in %s (engine %s)",
              __import__("chfront").__version__, args.host, port, args.data_dir,
              engine.version)
    sys.stdout.write(f"chfront listening on {args.host}:{port}\n")
    sys.stdout.flush()

    while not stop.wait(0.5):
        pass
    server.shutdown()          # no new connections
    server.server_close()
    server.tracker.stop(SHUTDOWN_GRACE)  # close idle keep-alive connections, wait for the rest
    engine.close()
    root.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
