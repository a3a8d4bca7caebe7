"""The lab's workload and its checker.

`Workload` writes sequence-numbered rows, one every `interval` seconds, through the API of a
region that the Route53 record sends users to (its weights read from the emulator's API, a
region drawn by weight as a weighted record answers), and records every attempt.
`SplitBrainWatch` asks every Postgres member, several times a second, whether it takes writes
(not in recovery, not read-only) and, in sync mode, whether a commit there completes or hangs
waiting for a synchronous standby. `report` turns both into what users saw:

- the write-unavailability window (RTO as users see it): the longest time without an
  acknowledged write, from the first failure after the fault to the next success;
- lost writes (RPO): acknowledged rows missing from the primary afterwards;
- split brain: moments when two members committed writes.

`RegionWriter` is a client inside one region that keeps writing to that region's own
Postgres member and `sessions` Redis member whatever failoverd does (it never follows a
failover); `local_report` says which of its acknowledged writes were lost and which were
acknowledged by the old primary after another one took writes (split brain as users see it).

The checker reaches every datastore through its client address (`lablib.client_address`),
which a datastore partition leaves open. Everything is bounded: the workload stops at
`stop()` or after `max_s`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import psycopg

import lablib

# The in-region writer's sequence numbers, apart from the main workload's.
LOCAL_SEQ_BASE = 1_000_000
# How long the in-region writer waits for an answer before it counts a write as hung.
LOCAL_WRITE_TIMEOUT_S = 1.0
# How long the checker waits for a probe commit before it counts the member's commits as hung
# (sync mode only).
COMMIT_PROBE_TIMEOUT_S = 0.5
# What Postgres warns when a commit's wait for a synchronous standby is cancelled: the
# transaction committed locally and the client gets no error, but nothing replicated it.
SYNC_WAIT_CANCELLED = "canceling wait for synchronous replication"


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
    """The Postgres members that took writes at one moment (monotonic seconds): `writable`,
    those not in recovery and not read-only; `committing`, those of them whose commit
    completed (in sync mode a writable member may accept a write and hang in its commit,
    waiting for a synchronous standby; otherwise every writable member commits)."""

    at: float
    writable: list[str]
    committing: list[str]


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
    """Samples every Postgres member, through its client address: which ones take writes
    now, and (sync mode) which of those commit."""

    def __init__(self, lab: lablib.Lab, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.interval = interval
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    def probe(self, region: str) -> tuple[bool, bool]:
        """(writable, commits): writable is not in recovery and not read-only; in sync mode a
        writable member commits if a transaction that writes WAL and touches no table (a
        transactional logical message: its commit waits for a synchronous standby like any
        write's) commits within COMMIT_PROBE_TIMEOUT_S. A transaction that only takes a
        transaction id would not do: it writes no WAL before its commit record, and such a
        commit does not wait. Outside sync mode a writable member commits."""
        try:
            with psycopg.connect(self.lab.pg_conninfo(region, client=True),
                                 autocommit=True) as c:
                recovery, read_only = c.execute(
                    "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
                ).fetchone()
                writable = not recovery and read_only == "off"
                if not writable or not self.lab.state.sync:
                    return writable, writable
                outcome, _ = bounded_statement(
                    c, "SELECT pg_logical_emit_message(true, 'failoverd-lab', 'commit probe')",
                    (), COMMIT_PROBE_TIMEOUT_S)
                return True, outcome == "ok"
        except psycopg.Error:
            return False, False

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=len(lablib.REGIONS)) as pool:
            while not self.halt.is_set():
                now = time.monotonic()
                answers = dict(zip(lablib.REGIONS, pool.map(self.probe, lablib.REGIONS),
                                   strict=True))
                self.samples.append(Sample(
                    now, [r for r, (w, _) in answers.items() if w],
                    [r for r, (_, c) in answers.items() if c]))
                self.halt.wait(self.interval)

    def split(self) -> list[Sample]:
        """The moments when two members committed writes."""
        return [s for s in self.samples if len(s.committing) > 1]

    def hung_commits(self) -> list[Sample]:
        """The moments when a member took writes but its commits hung (sync mode)."""
        return [s for s in self.samples if set(s.writable) - set(s.committing)]


def bounded_statement(conn: psycopg.Connection, sql: str, params: tuple[Any, ...],
                      timeout_s: float) -> tuple[str, str | None]:
    """Runs one autocommit statement, cancelled after `timeout_s`; returns ("ok", None),
    ("hung", why) or raises the statement's error. `statement_timeout` cannot do this: it
    is disarmed before the commit, so a commit waiting for a synchronous standby waits
    forever; a cancel ends that wait, and the statement then returns without an error but
    with a warning (committed locally, replicated nowhere), which counts as hung."""
    fired = threading.Event()
    warnings: list[str] = []

    def cancel() -> None:
        fired.set()
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=1)

    def notice(diag: psycopg.errors.Diagnostic) -> None:
        warnings.append(diag.message_primary or "")

    conn.add_notice_handler(notice)
    timer = threading.Timer(timeout_s, cancel)
    timer.start()
    try:
        conn.execute(sql, params)
    except psycopg.errors.QueryCanceled as e:
        return "hung", str(e).strip().splitlines()[0] if str(e) else "cancelled"
    finally:
        timer.cancel()
        conn.remove_notice_handler(notice)
    cancelled = [w for w in warnings if SYNC_WAIT_CANCELLED in w]
    if cancelled:
        return "hung", cancelled[0]
    if fired.is_set():
        return "hung", f"no answer within {timeout_s} s"
    return "ok", None


class LocalWrite(NamedTuple):
    """One write of a `RegionWriter`: when it started and ended (monotonic seconds), its
    sequence number, the store (`postgres` or `redis`), its outcome — `ok` (acknowledged),
    `failed` (refused: read-only, NOREPLICAS, connection refused...) or `hung` (no
    acknowledgement within LOCAL_WRITE_TIMEOUT_S: a statement cancelled or timed out, a
    commit still waiting for a synchronous standby, a Redis WAIT that no replica answered) —
    and the error."""

    start: float
    end: float
    seq: int
    store: str
    outcome: str
    detail: str | None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class RedisError(Exception):
    """An error reply (`-NOREPLICAS ...`, `-READONLY ...`)."""


class Resp:
    """Just enough of a Redis (RESP2) client for the in-region writer and the checker: one
    connection, one command at a time, every read bounded by the socket's timeout."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def call(self, *args: object, timeout: float | None = None) -> Any:
        if timeout is not None:
            self.sock.settimeout(timeout)
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            a = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self) -> Any:
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
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"not a RESP reply: {line[:40]!r}")


class RegionWriter(threading.Thread):
    """A client inside `region` that keeps talking to its local primaries: every `interval`
    seconds it inserts a row (seq from LOCAL_SEQ_BASE, region `{region}-local`) into the
    region's own Postgres member and sets `local:<seq>` on the region's own member of shard
    `sessions`, both through the region's client address, and never follows a failover. Each
    write is bounded by LOCAL_WRITE_TIMEOUT_S (statement_timeout plus a cancel for a commit
    waiting for a synchronous standby); after an error it reconnects. In sync mode a Redis
    write is a SET followed by `WAIT 1`: acknowledged once a replica has it, the Redis
    counterpart of a synchronous commit (`min-replicas-to-write` alone still acknowledges
    for up to `min-replicas-max-lag` seconds after the last replica went silent).
    Postgres and Redis are written by two threads, so that one store hanging does not slow
    the other."""

    def __init__(self, lab: lablib.Lab, region: str, interval: float = 0.05,
                 max_s: float = 600) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.region = region
        self.redis_member = f"sessions-{region}"
        self.interval = interval
        self.max_s = max_s
        self.writes: list[LocalWrite] = []
        self.halt = threading.Event()
        self.pg: psycopg.Connection | None = None
        self.redis: Resp | None = None

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)

    def run(self) -> None:
        redis = threading.Thread(target=self._loop, args=("redis", self._redis_write),
                                 daemon=True)
        redis.start()
        self._loop("postgres", self._postgres_write)
        redis.join(timeout=10)

    def _loop(self, store: str, write: Any) -> None:
        seq, started = LOCAL_SEQ_BASE, time.monotonic()
        while not self.halt.is_set() and time.monotonic() - started < self.max_s:
            now = time.monotonic()
            seq += 1
            outcome, detail = write(seq)
            self.writes.append(LocalWrite(now, time.monotonic(), seq, store, outcome, detail))
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - now)))
        if store == "postgres" and self.pg is not None:
            with contextlib.suppress(psycopg.Error):
                self.pg.close()
        if store == "redis" and self.redis is not None:
            self.redis.close()

    def _postgres_write(self, seq: int) -> tuple[str, str | None]:
        try:
            if self.pg is None or self.pg.closed:
                self.pg = psycopg.connect(
                    self.lab.pg_conninfo(self.region, client=True, tcp_user_timeout=2000),
                    autocommit=True)
                self.pg.execute(
                    f"SET statement_timeout = {int(LOCAL_WRITE_TIMEOUT_S * 1000)}")
            return bounded_statement(
                self.pg, "INSERT INTO writes (seq, region) VALUES (%s, %s)",
                (seq, f"{self.region}-local"), LOCAL_WRITE_TIMEOUT_S)
        except psycopg.Error as e:
            if self.pg is not None:
                with contextlib.suppress(psycopg.Error):
                    self.pg.close()
            self.pg = None
            text = str(e).strip().splitlines()[0] if str(e) else repr(e)
            # A connection attempt that timed out hung; anything else was refused.
            return ("hung" if "timeout expired" in text else "failed"), text

    def _redis_write(self, seq: int) -> tuple[str, str | None]:
        try:
            if self.redis is None:
                host, port = self.lab.redis_address(self.redis_member, client=True)
                self.redis = Resp(host, port, LOCAL_WRITE_TIMEOUT_S)
            self.redis.call("SET", f"local:{seq}", seq, timeout=LOCAL_WRITE_TIMEOUT_S)
            if self.lab.state.sync:
                wait_ms = int(LOCAL_WRITE_TIMEOUT_S * 1000)
                replicas = self.redis.call("WAIT", 1, wait_ms,
                                           timeout=LOCAL_WRITE_TIMEOUT_S + 1)
                if replicas < 1:
                    return "hung", f"WAIT: no replica acknowledged within {wait_ms} ms"
            return "ok", None
        except RedisError as e:
            return "failed", str(e)
        except (OSError, ValueError) as e:
            # The reply stream is out of step after a timeout: start afresh.
            if self.redis is not None:
                self.redis.close()
            self.redis = None
            return ("hung" if isinstance(e, TimeoutError) else "failed"), str(e) or repr(e)


def named_primary(lab: lablib.Lab, group: str) -> str | None:
    """The member the leader names primary of `group` (`postgres/main`, `redis/sessions`),
    or None if no agent names one."""
    try:
        primaries = lab.status(lab.leader_region())["cluster"]["primaries"]
    except (OSError, RuntimeError, KeyError, TypeError):
        return None
    named = primaries.get(group)
    return named.rsplit("/", 1)[-1] if named else None


def final_primary(lab: lablib.Lab) -> str | None:
    """The region of the Postgres primary the leader names, if it names one."""
    named = named_primary(lab, "postgres/main")
    return named.removeprefix("pg-") if named else None


def present_rows(lab: lablib.Lab) -> set[int]:
    """Every `seq` the current primary holds: the member the leader names (two members may
    both take writes after a split brain), else the one that takes writes; read through the
    client addresses."""
    def read() -> set[int]:
        region = final_primary(lab)
        info = (lab.pg_conninfo(region, client=True) if region else
                lab.pg_conninfo(client=True))
        with psycopg.connect(info, autocommit=True) as c:
            return {row[0] for row in c.execute("SELECT seq FROM writes")}
    return lablib.wait_until("a primary to read the rows from", 30, read, 0.5,
                             retry_on=(*lablib.NOT_YET, psycopg.Error))


def redis_roles(lab: lablib.Lab, shard: str) -> dict[str, str]:
    """What each member of `shard` says it is (ROLE, through client addresses): `master`,
    `slave of <member>`, or the error."""
    names = {m.port: n for n, m in lab.state.redis.items()}
    roles = {}
    for name, member in lab.state.redis.items():
        if member.shard != shard:
            continue
        try:
            client = Resp(*lab.redis_address(name, client=True), timeout=2)
            try:
                role = client.call("ROLE")
            finally:
                client.close()
            roles[name] = ("master" if role[0] == "master" else
                           f"{role[0]} of {names.get(int(role[2]), role[2])}")
        except (OSError, RedisError, IndexError, TypeError) as e:
            roles[name] = f"no answer: {e}"
    return roles


def redis_masters(lab: lablib.Lab, shard: str) -> list[str]:
    """The members of `shard` that say they are master."""
    return [name for name, role in redis_roles(lab, shard).items() if role == "master"]


def redis_keys(lab: lablib.Lab, name: str, pattern: str) -> set[str]:
    client = Resp(*lab.redis_address(name, client=True), timeout=5)
    try:
        return set(client.call("KEYS", pattern) or [])
    finally:
        client.close()


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
            {"at": round(s.at - fault_at, 2), "committing": s.committing}
            for s in watch.split()
        ][:5],
        # Sync mode: moments a member took writes but its commits hung (not split brain).
        "hung_commit_samples": len(watch.hung_commits()),
    }


def first_ack_elsewhere(lab: lablib.Lab, workload: Workload, region: str,
                        fault_at: float) -> float | None:
    """When the main workload first had a write acknowledged, after the fault, by a Postgres
    member other than `region`'s (its attempts name the primary by port)."""
    port = str(lab.state.postgres[region].port)
    for a in workload.attempts:
        if a.ok and a.start >= fault_at and str(a.detail) != port:
            return a.end
    return None


def outcome_runs(writes: list[LocalWrite], fault_at: float) -> list[list[Any]]:
    """The writes' outcomes in order, as runs of one outcome: [from_s, to_s, outcome, count]
    (seconds from the fault), to see at a glance when a store acknowledged, hung or
    refused."""
    runs: list[list[Any]] = []
    for w in writes:
        if runs and runs[-1][2] == w.outcome:
            runs[-1][1] = round(w.end - fault_at, 2)
            runs[-1][3] += 1
        else:
            runs.append([round(w.start - fault_at, 2), round(w.end - fault_at, 2), w.outcome, 1])
    return runs


def local_report(lab: lablib.Lab, writer: RegionWriter, workload: Workload, fault_at: float,
                 redis_master_since: float | None) -> dict[str, Any]:
    """What the in-region writer saw, per store: its writes acked, failed and hung; `lost`,
    acknowledged writes missing from the final primary (the member the leader names; for
    Redis the member of `sessions` that says it is master, the named one if several do),
    with `lost_window_s` (first and last lost acknowledgement, from the fault); `overlap`,
    writes the old primary acknowledged after another member took writes — for Postgres the
    main workload's first acknowledgement by another member, for Redis
    `redis_master_since` (monotonic seconds; None: no other master took writes)."""
    pg_since = first_ack_elsewhere(lab, workload, writer.region, fault_at)
    final_pg = final_primary(lab) or writer.region
    present = present_rows(lab)
    roles = redis_roles(lab, "sessions")
    masters = [name for name, role in roles.items() if role == "master"]
    final_redis = (masters[0] if len(masters) == 1 else
                   named_primary(lab, "redis/sessions") or writer.redis_member)
    keys = {int(k.split(":", 1)[1]) for k in redis_keys(lab, final_redis, "local:*")}
    stores: dict[str, Any] = {}
    for store, holds, since, final in (("postgres", present, pg_since, f"pg-{final_pg}"),
                                       ("redis", keys, redis_master_since, final_redis)):
        writes = [w for w in writer.writes if w.store == store]
        acked = [w for w in writes if w.ok]
        lost = [w for w in acked if w.seq not in holds]
        overlap = [w for w in acked if since is not None and w.end > since]
        stores[store] = {
            "writes": len(writes),
            "acked": len(acked),
            "failed": sum(w.outcome == "failed" for w in writes),
            "hung": sum(w.outcome == "hung" for w in writes),
            "lost": len(lost),
            "lost_window_s": [round(lost[0].end - fault_at, 2),
                              round(lost[-1].end - fault_at, 2)] if lost else None,
            "overlap": len(overlap),
            "overlap_window_s": [round(overlap[0].end - fault_at, 2),
                                 round(overlap[-1].end - fault_at, 2)] if overlap else None,
            "other_took_writes_at_s": round(since - fault_at, 2) if since is not None else None,
            "final_primary": final,
            "errors": sorted({w.detail for w in writes if w.detail})[:5],
            "runs": outcome_runs(writes, fault_at),
        }
    stores["redis"]["roles_at_end"] = roles
    return {
        "region": writer.region,
        **stores,
        "acked": sum(s["acked"] for s in stores.values()),
        "failed": sum(s["failed"] for s in stores.values()),
        "hung": sum(s["hung"] for s in stores.values()),
        "lost": sum(s["lost"] for s in stores.values()),
        "overlap": sum(s["overlap"] for s in stores.values()),
    }


