"""The local three-region lab: start, describe, stop.

Per region (eu-west-3, eu-central-1, us-east-1), on its own loopback address 127.0.1.N: an
API (chaos/api.py, writing through the current Postgres primary), a Postgres 15 member
(primary in eu-west-3, streaming replicas in the other two, each through its slot; an old
primary is rejoined as a replica by its region's agent with deploy/postgres/pg-rejoin),
Redis (shard `sessions`: master eu-west-3, replica eu-central-1; shard `carts`: master
eu-central-1, replica us-east-1) and a failoverd agent. Postgres and Redis also listen on a
second address per region, 127.0.2.N, for the region's own clients and the checker:
`Lab.partition_datastores(region)` cuts the first (what the agents, the APIs and the
replicas use) with an iptables chain of the lab's own and leaves the second open.
`FAILOVERD_LAB_SYNC=1` has the agents keep every primary fencing itself, so that one cut off
from every replica elsewhere cannot acknowledge a write (`SYNC_CONFIG`,
`SYNC_REDIS_REPLICAS`). Plus ministack serving the hosted zone `lab.example.` with one
weighted record per region, and chaos/links.py carrying the traffic between regions (agents'
peer links and their probes of other regions' APIs) with about 20 ms of latency within
Europe and 80 ms to us-east-1.

Everything lives under one directory; `lab.json` there names every process, port and file
(a `LabState`, saved after every change), so another command (a drill, `chaos/lab down`) can
act on it. Processes are stopped by the PIDs the lab recorded, Postgres by its data
directory. `Lab.start` brings a lab up in named steps (the `BringUp` list): a step that fails
is named, the logs are shown and everything started so far is stopped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from links import LinkSpec

CHAOS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(CHAOS)
PG_BIN = "/usr/lib/postgresql/15/bin"
REGIONS = ["eu-west-3", "eu-central-1", "us-east-1"]
# Where the Postgres primary starts; the other regions hold streaming replicas.
PG_PRIMARY_REGION = "eu-west-3"
# The Redis shards: (name, master's region, replica's region).
REDIS_SHARDS = (("sessions", "eu-west-3", "eu-central-1"), ("carts", "eu-central-1", "us-east-1"))
# Sync mode (FAILOVERD_LAB_SYNC=1): a third member per Redis shard, so that a master keeps a
# replica in another region whichever region is lost. The agents keep every primary fencing
# itself (SYNC_CONFIG): a Postgres primary's commits wait for one member of another region (a
# member's name is its cluster_name, the application_name its WAL receiver and failoverd's
# follow step announce), a Redis master refuses writes once it has heard from no replica of
# another region for 2 s.
SYNC_REDIS_REPLICAS = {"sessions": "us-east-1", "carts": "eu-west-3"}
SYNC_CONFIG = """
[postgres.synchronous]
mode = "quorum"
count = 1

[redis.self_fencing]
replicas = 1
max_lag = "2s"
"""
ZONE = "lab.example."
RECORD = "app.lab.example."
R53 = "{https://route53.amazonaws.com/doc/2013-04-01/}"
ACTOR = "lab"

T = TypeVar("T")
Progress = Callable[[str], None]

# What a check given to `wait_until` may raise while the thing waited for is not there yet: a
# connection refused, cut or timed out (OSError, which covers urllib's URLError), an HTTP
# exchange cut short, a body that is not (yet) the JSON or XML expected, an answer without the
# field looked for, no agent answering (RuntimeError), a condition not met (AssertionError).
# A check that talks to Postgres adds psycopg.Error (this module does not import psycopg: it
# runs under the system Python too).
NOT_YET: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
    ValueError,
    LookupError,
    TypeError,
    RuntimeError,
    AssertionError,
    ET.ParseError,
)


def latency_ms(a: str, b: str) -> int:
    """One-way latency between two regions: round trips of about 20 ms within Europe and
    80 ms to us-east-1, as between the AWS regions of those names."""
    return 40 if "us-east-1" in (a, b) else 10


def address(region: str) -> str:
    """Where `region`'s processes listen, and what the agents, APIs and replicas connect to."""
    return f"127.0.1.{REGIONS.index(region) + 1}"


def client_address(region: str) -> str:
    """A second address of `region`'s Postgres and Redis, for the region's own clients and
    the checker: `Lab.partition_datastores` leaves it open."""
    return f"127.0.2.{REGIONS.index(region) + 1}"


def sync_mode() -> bool:
    """Whether a lab started now runs its datastores synchronously (FAILOVERD_LAB_SYNC=1)."""
    return os.environ.get("FAILOVERD_LAB_SYNC", "") not in ("", "0")


_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, and never handed out before by this process: a lab picks a
    dozen ports before anything binds them, and the kernel may offer the same one twice."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def free_port_on(*hosts: str) -> int:
    """A port free on every one of `hosts` now (a datastore listens on two addresses)."""
    for _ in range(100):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {', '.join(hosts)} in 100 tries")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_until(what: str, deadline_s: float, check: Callable[[], T], interval: float = 0.2,
               retry_on: tuple[type[BaseException], ...] = NOT_YET) -> T:
    """Calls `check` until it returns something truthy, and returns that; raises TimeoutError
    after `deadline_s`. An exception of a type in `retry_on` counts as "not yet" (the last one
    is named in the TimeoutError); any other propagates at once."""
    end = time.monotonic() + deadline_s
    last_error: BaseException | None = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except retry_on as e:  # the thing waited for is not there yet
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {deadline_s} s waiting for {what}"
                       + (f" (last error: {last_error})" if last_error else ""))


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 3) -> tuple[int, Any]:
    """Returns (status, decoded JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, None


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie (dead, not yet collected by its parent — for a postmaster
    started by pg_ctl that is whatever reaps orphans, which may take seconds) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # pid (comm) state ...: comm may hold spaces and parentheses, the state follows
            # the last ')'.
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def check_packages() -> None:
    """Installs what the lab needs and lacks (as root, with apt-get)."""
    missing = []
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if not os.path.exists(f"{PG_BIN}/initdb"):
        missing.append("postgresql-15")
    if os.getuid() == 0 and not shutil.which("runuser"):
        missing.append("util-linux")
    # For Lab.partition_datastores (root only: without root a lab runs, but cannot cut them).
    if os.getuid() == 0 and not shutil.which("iptables"):
        missing.append("iptables")
    try:
        subprocess.run([sys.executable, "-c", "import venv, ensurepip"], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        missing.append("python3-venv")
    if missing:
        if os.getuid() != 0:
            raise SystemExit(f"missing {' '.join(missing)}: apt-get install {' '.join(missing)}")
        say(f"    installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env, stdout=subprocess.DEVNULL)


def tool(script: str) -> str:
    """The path a chaos/*.sh or scripts/*.sh helper prints (installing on first use)."""
    return subprocess.run([script], check=True, capture_output=True, text=True).stdout.strip()


def failoverd_binary() -> str:
    """$FAILOVERD_BIN, or target/debug/failoverd built now with cargo."""
    binary = os.environ.get("FAILOVERD_BIN")
    if binary:
        return binary
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "failoverd"], check=True,
                   cwd=ROOT)
    return os.path.join(ROOT, "target", "debug", "failoverd")


class Route53:
    """Enough of the Route53 REST API (as ministack serves it) for the lab."""

    def __init__(self, url: str, zone_id: str | None = None) -> None:
        self.url = url
        self.zone_id = zone_id

    def _call(self, method: str, path: str, xml: str | None = None) -> ET.Element:
        request = urllib.request.Request(
            f"{self.url}/2013-04-01/{path}", data=xml.encode() if xml else None, method=method)
        request.add_header("Content-Type", "application/xml")
        with urllib.request.urlopen(request, timeout=3) as response:
            return ET.fromstring(response.read())

    def create_zone(self) -> str:
        root = self._call("POST", "hostedzone", (
            '<?xml version="1.0" encoding="UTF-8"?><CreateHostedZoneRequest '
            'xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Name>{ZONE}</Name><CallerReference>lab-{secrets.token_hex(6)}</CallerReference>"
            "</CreateHostedZoneRequest>"))
        zone_id = root.findtext(f"{R53}HostedZone/{R53}Id")
        if not zone_id:
            raise RuntimeError(f"ministack created the zone {ZONE} but named no id for it")
        self.zone_id = zone_id.split("/")[-1]
        return self.zone_id

    def upsert_weighted(self, region: str, weight: int, value: str) -> None:
        self._call("POST", f"hostedzone/{self.zone_id}/rrset", (
            '<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest '
            'xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change>'
            "<Action>UPSERT</Action><ResourceRecordSet>"
            f"<Name>{RECORD}</Name><Type>A</Type><SetIdentifier>{region}</SetIdentifier>"
            f"<Weight>{weight}</Weight><TTL>30</TTL><ResourceRecords><ResourceRecord>"
            f"<Value>{value}</Value></ResourceRecord></ResourceRecords>"
            "</ResourceRecordSet></Change></Changes></ChangeBatch>"
            "</ChangeResourceRecordSetsRequest>"))

    def weights(self) -> dict[str, int]:
        """Weight per region of the weighted record, as the emulator serves it now."""
        root = self._call("GET", f"hostedzone/{self.zone_id}/rrset")
        weights = {}
        for rrset in root.iter(f"{R53}ResourceRecordSet"):
            weight = rrset.findtext(f"{R53}Weight")
            region = rrset.findtext(f"{R53}SetIdentifier")
            if rrset.findtext(f"{R53}Name") == RECORD and weight is not None and region:
                weights[region] = int(weight)
        return weights


# --- the lab's state (lab.json) ----------------------------------------------------------------


@dataclass(kw_only=True)
class Ministack:
    """The Route53 emulator: where it answers, and the zone the lab created there."""

    url: str
    zone_id: str | None = None


@dataclass(kw_only=True)
class PostgresMember:
    """One region's Postgres: its port (on the region's address) and data directory."""

    port: int
    data: str


@dataclass(kw_only=True)
class RedisMember:
    """One Redis server, named `{shard}-{region}` in `LabState.redis`."""

    shard: str
    region: str
    port: int
    url: str


@dataclass(kw_only=True)
class Api:
    """One region's API (chaos/api.py)."""

    port: int
    url: str


@dataclass(kw_only=True)
class Agent:
    """One region's failoverd agent: its listeners and its config file."""

    admin_port: int
    peer_port: int
    admin_url: str
    config: str


@dataclass(kw_only=True)
class Links:
    """chaos/links.py: its control URL, and every link's name and local port."""

    control: str
    names: list[str]
    ports: dict[str, int]


@dataclass(kw_only=True)
class LabState:
    """What `lab.json` holds. The bring-up fills it step by step (saving after each), so a
    lab that failed halfway can still be stopped from it: a section not started yet is None
    or empty, and is left out of the file."""

    dir: str
    # Every process the lab started and has not stopped, by key (`agent:{region}`,
    # `api:{region}`, `redis:{name}`, `ministack`, `links`).
    pids: dict[str, int] = field(default_factory=dict)
    # The Python with psycopg that runs the APIs.
    python: str
    # The admin token of the lab's actor.
    token: str
    # When the lab was created (seconds since the epoch).
    created: float
    # The failoverd binary the agents run.
    bin: str
    ministack: Ministack | None = None
    postgres: dict[str, PostgresMember] = field(default_factory=dict)
    redis: dict[str, RedisMember] = field(default_factory=dict)
    apis: dict[str, Api] = field(default_factory=dict)
    links: Links | None = None
    token_file: str | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    # Whether the datastores run synchronously (FAILOVERD_LAB_SYNC=1 when the lab started).
    sync: bool = False
    # The lab's own iptables chain (hooked into INPUT), once a datastore partition made it,
    # and the regions whose datastores it cuts now: `Lab.stop` removes it.
    firewall_chain: str | None = None
    partitioned: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        return {k: v for k, v in raw.items() if k == "pids" or v not in (None, {})}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LabState:
        """Reads what `to_json` wrote; an unknown key in a section is an error."""
        ministack, links = raw.get("ministack"), raw.get("links")
        return cls(
            dir=raw["dir"],
            pids={k: int(v) for k, v in raw.get("pids", {}).items()},
            python=raw["python"],
            token=raw["token"],
            created=raw["created"],
            bin=raw["bin"],
            ministack=Ministack(**ministack) if ministack else None,
            postgres={r: PostgresMember(**m) for r, m in raw.get("postgres", {}).items()},
            redis={n: RedisMember(**m) for n, m in raw.get("redis", {}).items()},
            apis={r: Api(**a) for r, a in raw.get("apis", {}).items()},
            links=Links(**links) if links else None,
            token_file=raw.get("token_file"),
            agents={r: Agent(**a) for r, a in raw.get("agents", {}).items()},
            sync=bool(raw.get("sync", False)),
            firewall_chain=raw.get("firewall_chain"),
            partitioned=list(raw.get("partitioned", [])),
        )


def _present(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the lab has no {what} yet (its bring-up did not get that far)")
    return value


class Lab:
    """A lab: `Lab.start()` brings one up, `Lab.load(dir)` attaches to a running one."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.dir = state.dir

    # --- describing -----------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str) -> Lab:
        with open(os.path.join(directory, "lab.json")) as f:
            return cls(LabState.from_json(json.load(f)))

    def save(self) -> None:
        path = os.path.join(self.dir, "lab.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.state.to_json(), f, indent=2)
        os.replace(path + ".tmp", path)

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def token_file(self) -> str:
        return _present(self.state.token_file, "admin token file")

    @property
    def ministack(self) -> Ministack:
        return _present(self.state.ministack, "ministack")

    @property
    def links(self) -> Links:
        return _present(self.state.links, "links")

    def admin(self, region: str) -> str:
        return self.state.agents[region].admin_url

    def api_url(self, region: str) -> str:
        return self.state.apis[region].url

    def route53(self) -> Route53:
        return Route53(self.ministack.url, self.ministack.zone_id)

    def pg_conninfo(self, region: str | None = None, client: bool = False,
                    **extra: object) -> str:
        """A member's connection string, or (no region) the multi-host one the APIs use;
        `client`: through the members' client addresses, which a datastore partition leaves
        open (the checker's view)."""
        regions = [region] if region else REGIONS
        where = client_address if client else address
        hosts = ",".join(where(r) for r in regions)
        ports = ",".join(str(self.state.postgres[r].port) for r in regions)
        info = f"host={hosts} port={ports} user=postgres dbname=lab connect_timeout=1"
        if not region:
            info += " target_session_attrs=read-write"
        for key, value in extra.items():
            info += f" {key}={value}"
        return info

    def redis_address(self, name: str, client: bool = False) -> tuple[str, int]:
        """(host, port) of Redis member `name` (`{shard}-{region}`); `client`: on its client
        address, which a datastore partition leaves open."""
        member = self.state.redis[name]
        return (client_address if client else address)(member.region), member.port

    def redis_layout(self) -> list[tuple[str, str, list[str]]]:
        """(shard, master's region, replicas' regions) of each Redis shard at bring-up."""
        return [(shard, master, [replica] + ([SYNC_REDIS_REPLICAS[shard]] if self.state.sync
                                             else []))
                for shard, master, replica in REDIS_SHARDS]

    def status(self, region: str | None = None) -> Any:
        """`/v1/status` of the agent in `region`, or of the first that answers."""
        for r in [region] if region else REGIONS:
            try:
                code, body = http_json("GET", f"{self.admin(r)}/v1/status", timeout=2)
                if code == 200:
                    return body
            except OSError:
                continue
        raise RuntimeError("no agent answers")

    def metric(self, region: str, name: str) -> float | None:
        """The sum of metric `name`'s samples on the agent of `region` (None if it does not
        answer)."""
        request = urllib.request.Request(f"{self.admin(region)}/metrics")
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def history(self, limit: int = 200) -> list[Any]:
        """The history, newest first, as the most up-to-date agent that answers holds it (a
        partitioned agent answers too, with what it knew when it was cut off)."""
        best = None
        for region in REGIONS:
            try:
                code, body = http_json(
                    "GET", f"{self.admin(region)}/v1/history?limit={limit}", timeout=2)
            except OSError:
                continue
            if code == 200 and (best is None or (body["epoch"], len(body["entries"])) >
                                (best["epoch"], len(best["entries"]))):
                best = body
        if best is None:
            raise RuntimeError("no agent answers")
        return best["entries"]

    def leader(self) -> str | None:
        for region in REGIONS:
            try:
                leader = self.status(region)["cluster"]["leader"]
                if leader:
                    return leader
            except (OSError, RuntimeError, KeyError):
                continue
        return None

    def leader_region(self) -> str:
        leader = self.leader()
        return leader[:-2] if leader else REGIONS[0]

    def link(self, name: str, **change: object) -> Any:
        code, body = http_json("POST", f"{self.links.control}/links/{name}", change, timeout=3)
        if code != 200:
            raise RuntimeError(f"cannot change link {name}: {body}")
        return body

    def links_of(self, region: str, kinds: tuple[str, ...] = ("peer",)) -> list[str]:
        """The names of every link into or out of `region`'s agent, of these kinds."""
        return [name for name in self.links.names
                if name.split(":")[0] in kinds and region in name.split(":")[1].split(">")]

    # --- process control ------------------------------------------------------------------

    def spawn(self, key: str, argv: list[str], log: str, env: dict[str, str] | None = None,
              cwd: str | None = None) -> int:
        """Starts a process in its own session; records its PID under `key`."""
        with open(os.path.join(self.dir, log), "ab") as out:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd,
                env=dict(os.environ, **(env or {})), start_new_session=True)
        self.state.pids[key] = child.pid
        self.save()
        return child.pid

    def kill(self, key: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stops the process the lab recorded as `key`; waits until it is gone."""
        pid = self.state.pids.get(key)
        if not pid:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        try:
            wait_until(f"{key} (pid {pid}) to exit", 15, lambda: not pid_alive(pid)
                       or _reap(pid), 0.05)
        finally:
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.state.pids.pop(key, None)
                self.save()

    def signal(self, key: str, sig: signal.Signals) -> None:
        """Sends `sig` to the process the lab recorded as `key` (SIGSTOP freezes it)."""
        os.kill(self.state.pids[key], sig)

    def postmaster_pid(self, region: str) -> int:
        with open(os.path.join(self.state.postgres[region].data, "postmaster.pid")) as f:
            return int(f.readline())

    def kill_postgres(self, region: str) -> None:
        """SIGKILL of the postmaster: the crash of a primary, not a clean shutdown."""
        pid = self.postmaster_pid(region)
        os.kill(pid, signal.SIGKILL)
        wait_until(f"postgres {region} to die", 15, lambda: not pid_alive(pid), 0.05)

    def kill_region(self, region: str) -> None:
        """A region lost at once: SIGKILL of its API, Postgres, Redis and agent, all sent
        before waiting for any of them to go."""
        keys = [k for k in (f"api:{region}", f"agent:{region}") if self.state.pids.get(k)]
        keys += [f"redis:{name}" for name, m in self.state.redis.items()
                 if m.region == region and self.state.pids.get(f"redis:{name}")]
        pids = [self.state.pids[k] for k in keys] + [self.postmaster_pid(region)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key in keys:
            self.kill(key)
        wait_until(f"postgres {region} to die", 15, lambda: not pid_alive(pids[-1]), 0.05)

    def start_agent(self, region: str) -> None:
        agent = self.state.agents[region]
        self.spawn(f"agent:{region}", [self.state.bin, "run", "--config", agent.config],
                   f"agent-{region}.log")

    def start_api(self, region: str) -> None:
        api = self.state.apis[region]
        # tcp_user_timeout: a connection whose packets a datastore partition drops fails
        # after 2 s instead of the kernel's quarter of an hour of retransmissions (the API
        # writes under a lock: one hung connection would hold every write of the region).
        self.spawn(f"api:{region}", [self.state.python, os.path.join(CHAOS, "api.py"),
                                     region, address(region), str(api.port),
                                     self.pg_conninfo(tcp_user_timeout=2000)],
                   f"api-{region}.log")

    # --- datastore partitions -------------------------------------------------------------

    def datastore_ports(self, region: str) -> list[int]:
        """The ports of `region`'s Postgres member and Redis members."""
        return [self.state.postgres[region].port] + [
            m.port for m in self.state.redis.values() if m.region == region]

    def _partition_rules(self, region: str) -> list[list[str]]:
        """The two rules of `region`'s datastore partition: TCP to its datastores' ports on
        address(region), and from them, dropped (both ways, so that a replication stream
        already established carries nothing either way). client_address(region) is left
        alone."""
        ports = ",".join(str(p) for p in self.datastore_ports(region))
        comment = ["-m", "comment", "--comment", f"failoverd lab: {region}'s datastores"]
        return [
            ["-p", "tcp", "-d", address(region), "-m", "multiport", "--dports", ports,
             *comment, "-j", "DROP"],
            ["-p", "tcp", "-s", address(region), "-m", "multiport", "--sports", ports,
             *comment, "-j", "DROP"],
        ]

    def partition_datastores(self, region: str) -> None:
        """Cuts `region`'s Postgres and Redis off from everyone who reaches them at
        address(region) (agents, APIs, replicas), while the region's clients still reach
        them at client_address(region). Needs root; `heal_datastores` undoes it and
        `stop` removes whatever is left."""
        if os.getuid() != 0 or not shutil.which("iptables"):
            raise RuntimeError("a datastore partition needs root and iptables")
        if region in self.state.partitioned:
            return
        chain = self.state.firewall_chain
        if chain is None:
            # Recorded before it exists, so that a failure halfway still gets it removed.
            chain = self.state.firewall_chain = firewall_chain_name(self.dir)
            self.save()
            _iptables("-N", chain)
            _iptables("-I", "INPUT", "1", "-i", "lo", "-j", chain)
        for rule in self._partition_rules(region):
            _iptables("-A", chain, *rule)
        self.state.partitioned.append(region)
        self.save()

    def heal_datastores(self, region: str) -> None:
        """Undoes `partition_datastores(region)`; the chain goes once nothing is cut."""
        chain = self.state.firewall_chain
        if chain is not None:
            for rule in self._partition_rules(region):
                _iptables_delete(chain, rule)
        if region in self.state.partitioned:
            self.state.partitioned.remove(region)
            self.save()
        if not self.state.partitioned:
            self.remove_firewall()

    def remove_firewall(self) -> None:
        """Unhooks and deletes the lab's iptables chain, if it made one; idempotent."""
        chain = self.state.firewall_chain
        if chain is None:
            return
        _iptables_delete("INPUT", ["-i", "lo", "-j", chain])
        for args in (("-F", chain), ("-X", chain)):
            done = subprocess.run(["iptables", "-w", "5", *args], capture_output=True,
                                  text=True)
            if done.returncode != 0 and "No chain" not in done.stderr + done.stdout:
                raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
        self.state.firewall_chain = None
        self.state.partitioned = []
        if os.path.isdir(self.dir):
            self.save()

    # --- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops every process the lab started and removes its iptables chain, then its
        directory."""
        try:
            self.remove_firewall()
        except (OSError, RuntimeError) as e:
            say(f"could not remove the lab's iptables chain {self.state.firewall_chain}: {e}")
        pids = self.state.pids
        for key in sorted(pids, key=lambda k: not k.startswith("agent")):
            try:
                os.kill(pids[key], signal.SIGTERM if key.startswith("agent") else signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key, pid in list(pids.items()):
            try:
                wait_until(f"{key} to exit", 12,
                           lambda pid=pid: not pid_alive(pid) or _reap(pid), 0.05)
            except TimeoutError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for region in REGIONS:
            member = self.state.postgres.get(region)
            if member and os.path.exists(os.path.join(member.data, "postmaster.pid")):
                subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", member.data, "-m",
                                            "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def dump_logs(self, progress: Progress = say, lines: int = 15) -> None:
        for name in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    tail = f.readlines()[-lines:]
                progress(f"--- {name}\n" + "".join(tail))

    # --- bring-up -------------------------------------------------------------------------


    @classmethod
    def start(cls, directory: str | None = None, progress: Progress = say,
              automatic: bool = True) -> Lab:
        """Brings a lab up in `directory` (a new temporary one by default), announcing each
        step through `progress`. `automatic`: whether the agents fail over by themselves (a
        benchmark turns it off to let another failover manager act)."""
        total = 2 + len(BRING_UP)

        def announce(number: int, text: str) -> None:
            progress(f"[{number}/{total}] {text}")

        # The two steps before the lab's directory exists: nothing to stop if they fail.
        announce(1, "checking packages")
        check_packages()
        python = tool(os.path.join(CHAOS, "venv.sh"))
        ministack_bin = tool(os.path.join(ROOT, "scripts", "ministack-venv.sh"))
        announce(2, "building failoverd")
        binary = failoverd_binary()
        lab = cls(LabState(dir=_make_lab_dir(directory), python=python,
                           token=secrets.token_hex(16), created=time.time(), bin=binary,
                           sync=sync_mode()))
        lab.save()
        inputs = BringUpInputs(ministack_bin=ministack_bin, automatic=automatic)
        for number, step in enumerate(BRING_UP, start=3):
            announce(number, step.text)
            try:
                step.run(lab, inputs)
            except BaseException:
                # Any failure, Ctrl-C included, stops what was started; the error propagates.
                # Said on stderr even when the caller keeps the steps quiet (the benchmarks).
                say(f"the lab did not come up: step {number}/{total} failed ({step.text}); "
                    f"its logs were in {lab.dir}")
                lab.dump_logs(say)
                lab.stop()
                raise
        return lab

    def _start_ministack(self, ministack_bin: str) -> None:
        """ministack on a free port, the zone lab.example. in it and one weighted record
        (weight 100) per region."""
        port = free_port()
        ministack = self.state.ministack = Ministack(url=f"http://127.0.0.1:{port}")
        self.spawn("ministack", [ministack_bin], "ministack.log", cwd=self.dir,
                   env={"GATEWAY_PORT": str(port), "BIND_HOST": "127.0.0.1"})
        wait_until("ministack to answer", 30, lambda: urllib.request.urlopen(
            f"{ministack.url}/_ministack/health", timeout=1).status == 200)
        r53 = Route53(ministack.url)
        ministack.zone_id = r53.create_zone()
        for i, region in enumerate(REGIONS):
            r53.upsert_weighted(region, 100, f"192.0.2.{i + 1}")
        self.save()

    def _start_postgres(self) -> None:
        """The primary (initdb, the `lab` database and its `writes` table), then a replica in
        every other region (pg_basebackup), each started and streaming."""
        for region in REGIONS:
            self.state.postgres[region] = PostgresMember(
                port=free_port_on(address(region), client_address(region)),
                data=os.path.join(self.dir, f"pg-{region}"))
        self.save()
        self._init_postgres(PG_PRIMARY_REGION)
        self._configure_postgres(PG_PRIMARY_REGION)
        self._start_postgres_member(PG_PRIMARY_REGION)
        self._create_lab_database(PG_PRIMARY_REGION)
        for region in REGIONS:
            if region != PG_PRIMARY_REGION:
                self._clone_postgres(region, PG_PRIMARY_REGION)
                self._configure_postgres(region)
                self._start_postgres_member(region)

    def _init_postgres(self, region: str) -> None:
        member = self.state.postgres[region]
        subprocess.run(
            as_postgres([f"{PG_BIN}/initdb", "-D", member.data, "-U", "postgres",
                         "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True)

    def _configure_postgres(self, region: str) -> None:
        member = self.state.postgres[region]
        with open(os.path.join(member.data, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {member.port}
listen_addresses = '{address(region)},{client_address(region)}'
unix_socket_directories = '{self.dir}'
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_sender_timeout = 5s
wal_receiver_timeout = 5s
wal_receiver_status_interval = 1s
wal_keep_size = 256MB
max_slot_wal_keep_size = 1GB
wal_log_hints = on
cluster_name = 'pg-{region}'
fsync = off
""")

    def _start_postgres_member(self, region: str) -> None:
        member = self.state.postgres[region]
        subprocess.run(
            as_postgres([f"{PG_BIN}/pg_ctl", "-D", member.data, "-l",
                         os.path.join(self.dir, f"pg-{region}.log"), "-w", "start"]),
            check=True, capture_output=True)

    def _create_lab_database(self, region: str) -> None:
        member = self.state.postgres[region]
        subprocess.run(
            ["psql", f"host={address(region)} port={member.port} user=postgres dbname=postgres",
             "-qc", "CREATE DATABASE lab"],
            check=True, capture_output=True)
        subprocess.run(
            ["psql", self.pg_conninfo(region), "-qc",
             "CREATE TABLE writes (seq bigint PRIMARY KEY, region text NOT NULL, "
             "at timestamptz NOT NULL DEFAULT clock_timestamp())"],
            check=True, capture_output=True)

    def _clone_postgres(self, region: str, primary_region: str) -> None:
        """A base backup of the primary into `region`'s data directory, set up to stream
        through a replication slot of its own (`pg_<region>`), as real deployments do."""
        member = self.state.postgres[region]
        slot = "pg_" + region.replace("-", "_")
        subprocess.run(
            as_postgres([f"{PG_BIN}/pg_basebackup", "-h", address(primary_region), "-p",
                         str(self.state.postgres[primary_region].port), "-U", "postgres",
                         "-D", member.data, "-R", "-X", "stream", "-c", "fast", "-d",
                         f"application_name=pg-{region}", "-C", "-S", slot]),
            check=True, capture_output=True)

    def _start_redis(self) -> None:
        """A master and its replicas per shard (`redis_layout`), until each answers PING."""
        for shard, master, replicas in self.redis_layout():
            for region in [master, *replicas]:
                port = free_port_on(address(region), client_address(region))
                name = f"{shard}-{region}"
                self.state.redis[name] = RedisMember(
                    shard=shard, region=region, port=port, url=f"redis://{address(region)}:{port}")
                self.spawn(f"redis:{name}", self._redis_argv(name, master),
                           f"redis-{name}.log")
        for name, member in self.state.redis.items():
            wait_until(f"redis {name}", 15, lambda m=member: subprocess.run(
                ["redis-cli", "-h", address(m.region), "-p", str(m.port), "ping"],
                capture_output=True, text=True).stdout.strip() == "PONG")

    def _redis_argv(self, name: str, master: str) -> list[str]:
        """How Redis member `name` is started: as the master of its shard, or a replica of
        the member in region `master`."""
        member = self.state.redis[name]
        region = member.region
        argv = ["redis-server", "--port", str(member.port), "--bind", address(region),
                client_address(region), "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", self.dir,
                "--repl-diskless-sync-delay", "0",
                # A replica notices a cut link after 5 s, as Postgres's replicas do
                # (wal_receiver_timeout): the leader counts on it before promoting
                # around a master it cannot reach (docs/safety.md).
                "--repl-timeout", "5"]
        if region != master:
            argv += ["--replicaof", address(master),
                     str(self.state.redis[f"{member.shard}-{master}"].port)]
        return argv

    def restart_region(self, region: str) -> None:
        """A region lost by `kill_region` comes back as its hosts would reboot: its Redis
        members as configured (an old master as an empty master), its agent and its API.
        Its Postgres member is not started: the agent rejoins the primary the log deposed as
        a replica with the rejoin command, which starts it (docs/failover.md)."""
        for shard, master, _ in self.redis_layout():
            name = f"{shard}-{region}"
            if name in self.state.redis:
                self.spawn(f"redis:{name}", self._redis_argv(name, master),
                           f"redis-{name}.log")
        self.start_agent(region)
        self.start_api(region)

    def _choose_ports(self) -> None:
        """The ports the APIs and agents will listen on: the links must know them first."""
        for region in REGIONS:
            admin_port = free_port(address(region))
            self.state.agents[region] = Agent(
                admin_port=admin_port,
                peer_port=free_port(address(region)),
                admin_url=f"http://{address(region)}:{admin_port}",
                config=os.path.join(self.dir, f"agent-{region}.toml"),
            )
        for region in REGIONS:
            port = free_port(address(region))
            self.state.apis[region] = Api(port=port, url=f"http://{address(region)}:{port}")
        self.save()

    def _start_links(self) -> None:
        """chaos/links.py with two links per ordered pair of regions: `peer:a>b` to b's
        agent, `api:a>b` to b's API."""
        specs = []
        for a in REGIONS:
            for b in REGIONS:
                if a == b:
                    continue
                specs.append(LinkSpec(
                    name=f"peer:{a}>{b}", listen_port=free_port(), target_host=address(b),
                    target_port=self.state.agents[b].peer_port, delay_ms=latency_ms(a, b)))
                specs.append(LinkSpec(
                    name=f"api:{a}>{b}", listen_port=free_port(), target_host=address(b),
                    target_port=self.state.apis[b].port, delay_ms=latency_ms(a, b)))
        config = os.path.join(self.dir, "links.json")
        with open(config, "w") as f:
            json.dump([s.to_json() for s in specs], f, indent=2)
        control = free_port()
        links = self.state.links = Links(control=f"http://127.0.0.1:{control}",
                                         names=[s.name for s in specs],
                                         ports={s.name: s.listen_port for s in specs})
        self.spawn("links", [sys.executable, os.path.join(CHAOS, "links.py"), config,
                             str(control)], "links.log")
        wait_until("the links", 10, lambda: http_json("GET", f"{links.control}/links"))

    def _start_apis(self) -> None:
        for region in REGIONS:
            self.start_api(region)
        for region in REGIONS:
            wait_until(f"api {region}", 20, lambda r=region: http_json(
                "GET", f"{self.api_url(r)}/health")[0] == 200)

    def _write_agent_configs(self, automatic: bool) -> None:
        """The cluster secret, the admin token, the Route53 credentials and each agent's
        config, checked by `failoverd check-config`."""
        secret = os.path.join(self.dir, "cluster-secret")
        with open(secret, "w") as f:
            f.write(secrets.token_hex(24) + "\n")
        token_file = os.path.join(self.dir, "admin-token")
        with open(token_file, "w") as f:
            f.write(self.token + "\n")
        os.chmod(token_file, 0o600)
        self.state.token_file = token_file
        for name, value in (("aws-access-key-id", "lab"), ("aws-secret-access-key", "lab")):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(value + "\n")
        for region in REGIONS:
            config = self.state.agents[region].config
            with open(config, "w") as f:
                f.write(self._agent_config(region, secret, token_file, automatic))
            subprocess.run([self.state.bin, "check-config", config], check=True,
                           capture_output=True)
        self.save()

    def _start_agents(self) -> None:
        for region in REGIONS:
            self.start_agent(region)

    def _agent_config(self, region: str, secret: str, token_file: str, automatic: bool) -> str:
        d, state, links, ministack = self.dir, self.state, self.links, self.ministack
        agents = state.agents
        # The lab runs production defaults; FAILOVERD_LAB_LEASE_TTL (e.g. "5s") overrides one,
        # to compare lease periods with the same drills.
        lease = os.environ.get("FAILOVERD_LAB_LEASE_TTL")
        lease_line = f'lease_ttl = "{lease}"\n' if lease else ""
        lines = [f"""# Written by chaos/lab for agent {region}-a.
[agent]
id = "{region}-a"
region = "{region}"
admin_listen = "{address(region)}:{agents[region].admin_port}"
peer_listen = "{address(region)}:{agents[region].peer_port}"
data_dir = "{d}/data-{region}"
log_format = "json"

[cluster]
secret = {{ file = "{secret}" }}
{lease_line}
[admin]
tokens = [{{ name = "{ACTOR}", secret = {{ file = "{token_file}" }} }}]

[failover]
automatic = {"true" if automatic else "false"}
"""]
        for peer in REGIONS:
            if peer == region:
                continue
            port = links.ports[f"peer:{region}>{peer}"]
            lines.append(f"""
[[peers]]
id = "{peer}-a"
region = "{peer}"
peer_url = "http://127.0.0.1:{port}"
admin_url = "{agents[peer].admin_url}"
""")
        for other in REGIONS:
            url = (state.apis[other].url if other == region else
                   f"http://127.0.0.1:{links.ports[f'api:{region}>{other}']}")
            lines.append(f"""
[[regions]]
name = "{other}"
weight = 100
[[regions.api]]
name = "api"
url = "{url}/health"
json_pointer = "/status"
json_equals = "ok"
""")
        lines.append("""
[postgres]
cluster = "main"
max_lag_on_failover = 1048576
replication = { user = "postgres" }
""")
        for member in REGIONS:
            pg = state.postgres[member]
            lines.append(f"""[[postgres.members]]
name = "pg-{member}"
region = "{member}"
dsn = "host={address(member)} port={pg.port} user=postgres dbname=postgres"
""")
        # An old primary of the agent's region is rewound and rejoined as a replica of the new
        # one: a member's data directory and server log are named after it.
        rejoin = json.dumps([os.path.join(ROOT, "deploy", "postgres", "pg-rejoin"),
                             "--pgdata", os.path.join(d, "{member}"), "--bindir", PG_BIN,
                             "--log", os.path.join(d, "{member}.log")])
        lines.append(f"""[postgres.rejoin]
command = {rejoin}
""")
        for shard, _, _ in REDIS_SHARDS:
            lines.append(f"""
[[redis.shards]]
name = "{shard}"
mode = "replication"
""")
            for name, redis in state.redis.items():
                if redis.shard == shard:
                    lines.append(f"""[[redis.shards.members]]
name = "{name}"
region = "{redis.region}"
url = "{redis.url}"
""")
        if state.sync:
            lines.append(SYNC_CONFIG)
        credentials = (
            f'{{ access_key_id = {{ file = "{d}/aws-access-key-id" }}, '
            f'secret_access_key = {{ file = "{d}/aws-secret-access-key" }} }}'
        )
        lines.append(f"""
[route53]
zone_id = "{ministack.zone_id}"
record_name = "{RECORD}"
record_type = "A"
ttl = 30
endpoint_url = "{ministack.url}"
credentials = {credentials}
""")
        for i, other in enumerate(REGIONS):
            lines.append(f"""
[route53.regions.{other}]
set_identifier = "{other}"
value = "192.0.2.{i + 1}"
""")
        return "".join(lines)

    def wait_healthy(self, deadline_s: float) -> None:
        """Until the agents agree on a leader that names both primaries, sees every target
        Up and a candidate for every Postgres and Redis group."""

        def healthy() -> bool:
            status = self.status(self.leader_region())
            cluster = status["cluster"]
            targets = (cluster.get("verdict") or {}).get("targets", {})
            # 3 APIs, 3 Postgres members, 4 Redis members (6 in sync mode): each reported Up,
            # Down by none.
            if len(targets) < len(REGIONS) * 2 + len(self.state.redis):
                raise AssertionError(f"the leader has a verdict on {len(targets)} targets")
            bad = [k for k, v in targets.items() if not v.get("up") or v.get("down")]
            bad += [k for k, v in targets.items() if k.startswith("http/") and v["state"] != "up"]
            if bad:
                raise AssertionError(f"not up: {', '.join(sorted(set(bad)))}")
            missing = {"postgres/main", "redis/sessions", "redis/carts"} - set(
                cluster.get("primaries", {}))
            if missing:
                raise AssertionError(f"no primary named for {', '.join(sorted(missing))}")
            readiness = cluster["failover_readiness"].get("postgres/main", {})
            choice = readiness.get("choice", {})
            if choice.get("decision") != "promote":
                raise AssertionError(f"no Postgres candidate: {choice}")
            if self.state.sync:
                # The agents have made every primary fence itself, and the log holds it (what
                # a leader elected after a fault judges by).
                if not readiness.get("fences_itself"):
                    raise AssertionError("the Postgres primary does not fence itself yet: "
                                         f"{readiness.get('if_partitioned')}")
                rules = cluster.get("primary_rules") or {}
                for group, target in cluster["primaries"].items():
                    if (rules.get(target) or {}).get("required", 0) < 1:
                        raise AssertionError(f"the log holds no self-fencing rule for {group}'s "
                                             f"{target}: {rules.get(target)}")
            return True

        wait_until("a healthy lab", deadline_s, healthy, 0.5)


@dataclass(frozen=True)
class BringUpInputs:
    """What the bring-up steps need besides the lab itself."""

    ministack_bin: str
    # Whether the agents fail over by themselves.
    automatic: bool


@dataclass(frozen=True)
class BringUpStep:
    """One named step of `Lab.start`: the name is what a failure reports."""

    text: str
    run: Callable[[Lab, BringUpInputs], None]


# The steps `Lab.start` runs once the lab's directory exists, in order.
BRING_UP = (
    BringUpStep(
        "starting ministack (Route53) with the zone lab.example.",
        lambda lab, inputs: lab._start_ministack(inputs.ministack_bin),
    ),
    BringUpStep(
        f"starting Postgres 15: primary {PG_PRIMARY_REGION}, streaming replicas in the others",
        lambda lab, _: lab._start_postgres(),
    ),
    BringUpStep(
        "starting Redis: sessions (master eu-west-3), carts (master eu-central-1)",
        lambda lab, _: lab._start_redis(),
    ),
    BringUpStep(
        "choosing the ports of the APIs and the agents", lambda lab, _: lab._choose_ports()
    ),
    BringUpStep("starting the links between regions", lambda lab, _: lab._start_links()),
    BringUpStep("starting one API per region", lambda lab, _: lab._start_apis()),
    BringUpStep(
        "writing and checking the agents' configs",
        lambda lab, inputs: lab._write_agent_configs(inputs.automatic),
    ),
    BringUpStep("starting one failoverd agent per region", lambda lab, _: lab._start_agents()),
    BringUpStep(
        "waiting for a leader, every target up and the primaries named",
        lambda lab, _: lab.wait_healthy(60),
    ),
)


def firewall_chain_name(directory: str) -> str:
    """The iptables chain of the lab in `directory`: its basename, for a person who finds
    it, and a digest of its path, so two labs never share one (at most 28 characters, the
    limit of a chain name)."""
    path = os.path.abspath(directory)
    base = "".join(c for c in os.path.basename(path) if c.isalnum() or c in "-_.")
    return f"fo-{base[-17:]}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"


def _iptables(*args: str) -> None:
    done = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")


def _iptables_delete(chain: str, rule: list[str]) -> None:
    """Deletes every copy of `rule` from `chain` (none left is fine)."""
    for _ in range(10):
        done = subprocess.run(["iptables", "-w", "5", "-D", chain, *rule], capture_output=True)
        if done.returncode != 0:
            return


def _make_lab_dir(directory: str | None) -> str:
    """Creates the lab's directory (a new temporary one when `directory` is None), readable
    by the postgres user that runs the members."""
    if directory:
        os.makedirs(directory)
    else:
        directory = tempfile.mkdtemp(prefix="failoverd-lab.")
    os.chmod(directory, 0o755)
    if os.getuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    return directory


def _reap(pid: int) -> bool:
    """Collects a child that exited (our own children only); True once it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return not pid_alive(pid)


def random_region(weights: dict[str, int]) -> str | None:
    """A region drawn by weight, as a weighted DNS record would answer."""
    live = [(r, w) for r, w in weights.items() if w > 0]
    if not live:
        return None
    pick = random.uniform(0, sum(w for _, w in live))
    for region, weight in live:
        pick -= weight
        if pick <= 0:
            return region
    return live[-1][0]
