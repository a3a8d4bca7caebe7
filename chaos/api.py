"""One region's API in the lab: serves `/health` (what failoverd probes) and writes through
the current Postgres primary, found the way applications find it: a multi-host connection
string with `target_session_attrs=read-write` (a fenced or recovering member is skipped).

  GET  /health          200 {"status": "ok", "region": ...} while the process serves
  POST /write {"seq"}   200 {"seq", "primary"} once the row is committed; 503 otherwise

Usage: python api.py REGION HOST PORT CONNINFO
"""

import contextlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

REGION, HOST, PORT, CONNINFO = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
connection: psycopg.Connection | None = None


def write(seq: int) -> str:
    """Commits row `seq`; returns the port of the primary that took it. On an error the
    connection is dropped: the next write connects afresh, to whichever member is primary."""
    global connection
    with lock:
        try:
            if connection is None or connection.closed:
                connection = psycopg.connect(CONNINFO, autocommit=True)
            row = connection.execute(
                "INSERT INTO writes (seq, region) VALUES (%s, %s) "
                "RETURNING current_setting('port')",
                (seq, REGION),
            ).fetchone()
            if row is None:
                raise psycopg.ProgrammingError("INSERT ... RETURNING returned no row")
            return row[0]
        except psycopg.Error:
            if connection is not None:
                # Closing a connection already broken may fail too: it is gone either way.
                with contextlib.suppress(psycopg.Error):
                    connection.close()
            connection = None
            raise


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.answer(200, {"status": "ok", "region": REGION})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            seq = int(json.loads(self.rfile.read(length) or b"{}")["seq"])
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"error": "body must be {\"seq\": <integer>}"})
            return
        if self.path != "/write":
            self.answer(404, {"error": "not found"})
            return
        try:
            primary = write(seq)
        except psycopg.Error as e:
            self.answer(503, {"error": str(e).strip().splitlines()[0] if str(e) else repr(e)})
            return
        self.answer(200, {"seq": seq, "primary": primary, "region": REGION})

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = True
    print(f"api {REGION} on http://{HOST}:{PORT}", flush=True)
    server.serve_forever()
