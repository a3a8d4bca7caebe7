"""The lab's workload and its checker.

`Workload` writes sequence-numbered rows, one every `interval` seconds, through the API of a
region that the Route53 record sends users to (its weights read from the emulator's API, a
region drawn by weight as a weighted record answers), and records every attempt.
`SplitBrainWatch` asks every Postgres member, several times a second, whether it takes writes
(not in recovery, not read-only). `report` turns both into what users saw:

- the write-unavailability window (RTO as users see it): the longest time without an
  acknowledged write, from the first failure after the fault to the next success;
- lost writes (RPO): acknowledged rows missing from the primary afterwards;
- split brain: moments when two members took writes.

Everything is bounded: the workload stops at `stop()` or after `max_s`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

import psycopg

import lablib


class Attempt(NamedTuple):
    """One write: when it started and ended (monotonic seconds), its sequence number, the
    region whose API took it (None when DNS named none), whether it was acknowledged, and the
    primary's port or the error."""

    start: float
    end: float
    seq: int
    region: str | None
    ok: bool
    detail: Any


class Sample(NamedTuple):
    """The Postgres members that took writes at one moment (monotonic seconds)."""

    at: float
    writable: list[str]


class Workload(threading.Thread):
    def __init__(self, lab: lablib.Lab, interval: float = 0.05, max_s: float = 600) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.interval = interval
        self.max_s = max_s
        self.attempts: list[Attempt] = []
        self.halt = threading.Event()
        self.weights: dict[str, int] = {}
        self.weights_error: str | None = None
        self.gates: dict[str, bool] = {}

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    def refresh_weights(self, r53: lablib.Route53) -> None:
        try:
            self.weights = r53.weights()
            self.weights_error = None
        except OSError as e:  # the control plane is down: users keep the last answer
            self.weights_error = str(e)
        # Route53's data plane: a region whose gate health check fails gets no answers,
        # whatever its weight (the gate is served by the region's own agent).
        gates = {}
        for region in lablib.REGIONS:
            try:
                code, _ = lablib.http_json(
                    "GET", f"{self.lab.admin(region)}/v1/gate/{region}", timeout=0.5)
                gates[region] = code == 200
            except OSError:
                gates[region] = False
        self.gates = gates

    def answer(self) -> dict[str, int]:
        """The weights a resolver would draw from now: in DNS and passing the gate."""
        return {r: w for r, w in self.weights.items() if self.gates.get(r, True)}

    def resolve(self) -> None:
        """Keeps the DNS answer fresh, apart from the writes: a hung control plane must not
        slow them."""
        r53 = self.lab.route53()
        while not self.halt.is_set():
            self.refresh_weights(r53)
            self.halt.wait(0.5)

    def run(self) -> None:
        self.refresh_weights(self.lab.route53())
        threading.Thread(target=self.resolve, daemon=True).start()
        seq, started = 0, time.monotonic()
        while not self.halt.is_set() and time.monotonic() - started < self.max_s:
            now = time.monotonic()
            seq += 1
            region = lablib.random_region(self.answer())
            if region is None:
                self.attempts.append(
                    Attempt(now, time.monotonic(), seq, None, False, "no region in DNS"))
            else:
                url = f"{self.lab.api_url(region)}/write"
                try:
                    code, body = lablib.http_json("POST", url, {"seq": seq}, timeout=1)
                    ok = code == 200
                    detail = body.get("primary") if ok else (body or {}).get("error")
                except (OSError, ValueError) as e:
                    ok, detail = False, str(e)
                self.attempts.append(Attempt(now, time.monotonic(), seq, region, ok, detail))
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - now)))

    def acked(self) -> set[int]:
        return {a.seq for a in self.attempts if a.ok}

    def succeeding(self, since: float, for_s: float) -> bool:
        """Whether every write that started in the last `for_s` seconds (after `since`)
        succeeded, with at least a few of them."""
        now = time.monotonic()
        recent = [a for a in self.attempts if a.start >= max(since, now - for_s)]
        return len(recent) >= 3 and all(a.ok for a in recent) and now - since >= for_s


class SplitBrainWatch(threading.Thread):
    """Samples every Postgres member: which ones take writes now."""

    def __init__(self, lab: lablib.Lab, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.interval = interval
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    def writable(self, region: str) -> bool:
        try:
            with psycopg.connect(self.lab.pg_conninfo(region, connect_timeout=1),
                                 autocommit=True) as c:
                recovery, read_only = c.execute(
                    "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
                ).fetchone()
                return not recovery and read_only == "off"
        except psycopg.Error:
            return False

    def run(self) -> None:
        while not self.halt.is_set():
            now = time.monotonic()
            self.samples.append(Sample(now, [r for r in lablib.REGIONS if self.writable(r)]))
            self.halt.wait(self.interval)

    def split(self) -> list[Sample]:
        return [s for s in self.samples if len(s.writable) > 1]


def present_rows(lab: lablib.Lab) -> set[int]:
    """Every `seq` the current primary holds."""
    def read() -> set[int]:
        with psycopg.connect(lab.pg_conninfo(), autocommit=True) as c:
            return {row[0] for row in c.execute("SELECT seq FROM writes")}
    return lablib.wait_until("a primary to read the rows from", 30, read, 0.5,
                             retry_on=(*lablib.NOT_YET, psycopg.Error))


def unavailability(attempts: list[Attempt], since: float) -> tuple[float, float | None]:
    """The longest time without an acknowledged write, among writes after `since` (seconds),
    and when it began."""
    window, began = 0.0, None
    last_ok = None
    for start, end, _, _, ok, _ in attempts:
        if start < since - 1:
            if ok:
                last_ok = end
            continue
        if ok:
            if last_ok is not None and end - last_ok > window:
                window, began = end - last_ok, last_ok
            last_ok = end
    return window, began


def report(
    lab: lablib.Lab, workload: Workload, watch: SplitBrainWatch, fault_at: float
) -> dict[str, Any]:
    acked = workload.acked()
    present = present_rows(lab)
    lost = sorted(acked - present)
    window, _ = unavailability(workload.attempts, fault_at)
    failed = [a for a in workload.attempts if not a.ok]
    return {
        "writes": len(workload.attempts),
        "acked": len(acked),
        "failed": len(failed),
        "lost": len(lost),
        "lost_seqs": lost[:20],
        "rto_s": round(window, 2),
        "split_brain_samples": len(watch.split()),
        "split_brain": [
            {"at": round(t - fault_at, 2), "writable": w} for t, w in watch.split()
        ][:5],
    }


