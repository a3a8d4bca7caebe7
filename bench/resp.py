"""A minimal Redis (RESP2) client for the benchmarks: one connection, one command at a time."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

# A decoded reply: a simple or bulk string, an integer, nil, or an array of replies.
Reply = Any


class RedisError(Exception):
    """An error reply (`-ERR ...`, `-READONLY ...`)."""


class Redis:
    def __init__(self, host: str, port: int, timeout: float = 1.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Redis:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, *args: object) -> Reply:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            a = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:].decode()
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")


def try_call(host: str, port: int, *args: object, timeout: float = 0.5) -> Reply | Exception:
    """One command on a fresh connection: its reply, or the exception it raised."""
    try:
        with Redis(host, port, timeout) as r:
            return r.call(*args)
    except (OSError, RedisError, ConnectionError) as e:
        return e
