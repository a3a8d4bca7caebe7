"""The lab's links between regions: one TCP proxy per directed link, with latency, jitter,
loss and cuts that a drill sets at run time.

Every link is `kind:from>to` (`peer:eu-west-3>us-east-1` carries agent eu-west-3's Raft and
report traffic to agent us-east-1; `api:eu-west-3>us-east-1` carries agent eu-west-3's probes
of us-east-1's API). A link delays each chunk by `delay_ms` +/- `jitter_ms` (never reordering
it), and with probability `loss` adds a retransmission delay (200 ms, doubling, as TCP
would after a lost segment): a user-space stand-in for `tc netem` that works without root.
A cut link closes its connections and blackholes new ones: connects hang, as across a real
partition.

Control: `GET /links` lists them; `POST /links/<name>` with a JSON object of the settings to
change. Usage: python3 links.py CONFIG.json CONTROL_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

MAX_CHUNK = 64 * 1024


@dataclass(kw_only=True)
class LinkSpec:
    """One link as CONFIG.json describes it (chaos/lablib.py writes the file)."""

    name: str
    listen_port: int
    target_host: str
    target_port: int
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    cut: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LinkSpec:
        """Reads what `to_json` wrote; an unknown key is an error."""
        return cls(**raw)


class Link:
    def __init__(self, spec: LinkSpec) -> None:
        self.name = spec.name
        self.listen_port = spec.listen_port
        self.target = (spec.target_host, spec.target_port)
        self.delay_ms = float(spec.delay_ms)
        self.jitter_ms = float(spec.jitter_ms)
        self.loss = float(spec.loss)
        self.cut = bool(spec.cut)
        self.connections: set[asyncio.StreamWriter] = set()

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen_port": self.listen_port,
            "target": f"{self.target[0]}:{self.target[1]}",
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "loss": self.loss,
            "cut": self.cut,
            "connections": len(self.connections),
        }

    def release_after(self) -> float:
        """Seconds one chunk waits before it is passed on."""
        wait = self.delay_ms + random.uniform(-self.jitter_ms, self.jitter_ms)
        rto = 200.0
        while self.loss > 0 and random.random() < self.loss and rto < 3200:
            wait += rto
            rto *= 2
        return max(wait, 0.0) / 1000.0

    async def pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, closing: asyncio.Event
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def send() -> None:
            while True:
                release, data = await queue.get()
                if data is None:
                    break
                pause = release - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        last = 0.0
        try:
            while not closing.is_set():
                data = await reader.read(MAX_CHUNK)
                if not data:
                    break
                last = max(last, time.monotonic() + self.release_after())
                await queue.put((last, data))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await queue.put((0, None))
            try:
                await asyncio.wait_for(sender, timeout=5)
            except (TimeoutError, ConnectionError, asyncio.CancelledError):
                sender.cancel()
            # Closing a transport whose socket is already gone may fail: it is closed anyway.
            with contextlib.suppress(OSError):
                writer.close()

    async def handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self.cut:
            # A partition: the connection hangs, nothing reaches the other side.
            self.connections.add(client_writer)
            try:
                while self.cut and await client_reader.read(MAX_CHUNK):
                    pass
            except ConnectionError:
                pass
            finally:
                self.connections.discard(client_writer)
                client_writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=2
            )
        except (OSError, TimeoutError):
            client_writer.close()
            return
        closing = asyncio.Event()
        self.connections.add(client_writer)
        try:
            await asyncio.gather(
                self.pipe(client_reader, up_writer, closing),
                self.pipe(up_reader, client_writer, closing),
            )
        finally:
            self.connections.discard(client_writer)

    def apply(self, change: dict[str, Any]) -> None:
        for key in ("delay_ms", "jitter_ms", "loss"):
            if key in change:
                setattr(self, key, float(change[key]))
        if "cut" in change:
            self.cut = bool(change["cut"])
            if self.cut:
                for writer in list(self.connections):
                    writer.close()


async def control(
    links: dict[str, Link], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        answer: Any
        status, answer = HTTPStatus.OK, None
        if method == "GET" and path == "/links":
            answer = [link.state() for link in links.values()]
        elif method == "POST" and path.startswith("/links/"):
            link = links.get(path[len("/links/"):])
            if link is None:
                status, answer = HTTPStatus.NOT_FOUND, {"error": f"no link {path}"}
            else:
                link.apply(json.loads(body or b"{}"))
                answer = link.state()
        else:
            status, answer = HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}
        data = json.dumps(answer).encode()
        writer.write(
            f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ValueError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(config_path: str, control_port: int) -> None:
    with open(config_path) as f:
        specs = [LinkSpec.from_json(raw) for raw in json.load(f)]
    links = {spec.name: Link(spec) for spec in specs}
    servers = []
    for link in links.values():
        servers.append(await asyncio.start_server(link.handle, "127.0.0.1", link.listen_port))
    servers.append(
        await asyncio.start_server(
            lambda r, w: control(links, r, w), "127.0.0.1", control_port
        )
    )
    print(f"links: {len(links)} links, control on 127.0.0.1:{control_port}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
