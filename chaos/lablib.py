"""The local three-region lab: start, describe, stop.

Per region (eu-west-3, eu-central-1, us-east-1), on its own loopback address 127.0.1.N:
an API (chaos/api.py, writing through the current Postgres primary), a Postgres 15 member
(primary in eu-west-3, streaming replicas in the other two), Redis (shard `sessions`: master
eu-west-3, replica eu-central-1; shard `carts`: master eu-central-1, replica us-east-1) and a
failoverd agent. Plus ministack serving the hosted zone `lab.example.` with one weighted
record per region, and chaos/links.py carrying the traffic between regions (agents' peer
links and their probes of other regions' APIs) with about 20 ms of latency within Europe and
80 ms to us-east-1.

Everything lives under one directory; `lab.json` there names every process, port and file,
so another command (a drill, `chaos/lab down`) can act on it. Processes are stopped by the
PIDs the lab recorded, Postgres by its data directory.
"""

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
import urllib.request
import xml.etree.ElementTree as ET

CHAOS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(CHAOS)
PG_BIN = "/usr/lib/postgresql/15/bin"
REGIONS = ["eu-west-3", "eu-central-1", "us-east-1"]
ZONE = "lab.example."
RECORD = "app.lab.example."
R53 = "{https://route53.amazonaws.com/doc/2013-04-01/}"
ACTOR = "lab"


def latency_ms(a, b):
    """One-way latency between two regions: round trips of about 20 ms within Europe and
    80 ms to us-east-1, as between the AWS regions of those names."""
    return 40 if "us-east-1" in (a, b) else 10


def address(region):
    return f"127.0.1.{REGIONS.index(region) + 1}"


_GIVEN = set()


def free_port(host="127.0.0.1"):
    """A port free on `host` now, and never handed out before by this process: a lab picks a
    dozen ports before anything binds them, and the kernel may offer the same one twice."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def say(message):
    print(message, file=sys.stderr, flush=True)


def wait_until(what, deadline_s, check, interval=0.2):
    """Calls `check` until it returns something truthy; raises after `deadline_s`."""
    end = time.monotonic() + deadline_s
    last_error = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the thing waited for is not there yet
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {deadline_s} s waiting for {what}"
                       + (f" (last error: {last_error})" if last_error else ""))


def http_json(method, url, body=None, token=None, timeout=3):
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


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.getuid() == 0 else argv


def pid_alive(pid):
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


def check_packages():
    """Installs what the lab needs and lacks (as root, with apt-get)."""
    missing = []
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if not os.path.exists(f"{PG_BIN}/initdb"):
        missing.append("postgresql-15")
    if os.getuid() == 0 and not shutil.which("runuser"):
        missing.append("util-linux")
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
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       check=True, env=env, stdout=subprocess.DEVNULL)


def tool(script):
    """The path a chaos/*.sh or scripts/*.sh helper prints (installing on first use)."""
    return subprocess.run([script], check=True, capture_output=True, text=True).stdout.strip()


class Route53:
    """Enough of the Route53 REST API (as ministack serves it) for the lab."""

    def __init__(self, url, zone_id=None):
        self.url = url
        self.zone_id = zone_id

    def _call(self, method, path, xml=None):
        request = urllib.request.Request(
            f"{self.url}/2013-04-01/{path}", data=xml.encode() if xml else None, method=method)
        request.add_header("Content-Type", "application/xml")
        with urllib.request.urlopen(request, timeout=3) as response:
            return ET.fromstring(response.read())

    def create_zone(self):
        root = self._call("POST", "hostedzone", (
            '<?xml version="1.0" encoding="UTF-8"?><CreateHostedZoneRequest '
            'xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Name>{ZONE}</Name><CallerReference>lab-{secrets.token_hex(6)}</CallerReference>"
            "</CreateHostedZoneRequest>"))
        self.zone_id = root.find(f"{R53}HostedZone/{R53}Id").text.split("/")[-1]
        return self.zone_id

    def upsert_weighted(self, region, weight, value):
        self._call("POST", f"hostedzone/{self.zone_id}/rrset", (
            '<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest '
            'xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change>'
            "<Action>UPSERT</Action><ResourceRecordSet>"
            f"<Name>{RECORD}</Name><Type>A</Type><SetIdentifier>{region}</SetIdentifier>"
            f"<Weight>{weight}</Weight><TTL>30</TTL><ResourceRecords><ResourceRecord>"
            f"<Value>{value}</Value></ResourceRecord></ResourceRecords>"
            "</ResourceRecordSet></Change></Changes></ChangeBatch>"
            "</ChangeResourceRecordSetsRequest>"))

    def weights(self):
        """Weight per region of the weighted record, as the emulator serves it now."""
        root = self._call("GET", f"hostedzone/{self.zone_id}/rrset")
        weights = {}
        for rrset in root.iter(f"{R53}ResourceRecordSet"):
            if rrset.findtext(f"{R53}Name") == RECORD and rrset.find(f"{R53}Weight") is not None:
                weights[rrset.findtext(f"{R53}SetIdentifier")] = int(
                    rrset.findtext(f"{R53}Weight"))
        return weights


class Lab:
    """A lab: `Lab.start()` brings one up, `Lab.load(dir)` attaches to a running one."""

    def __init__(self, state):
        self.state = state
        self.dir = state["dir"]

    # --- describing -----------------------------------------------------------------------

    @classmethod
    def load(cls, directory):
        with open(os.path.join(directory, "lab.json")) as f:
            return cls(json.load(f))

    def save(self):
        path = os.path.join(self.dir, "lab.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.state, f, indent=2)
        os.replace(path + ".tmp", path)

    @property
    def token(self):
        return self.state["token"]

    def admin(self, region):
        return self.state["agents"][region]["admin_url"]

    def route53(self):
        return Route53(self.state["ministack"]["url"], self.state["ministack"]["zone_id"])

    def pg_conninfo(self, region=None, **extra):
        """A member's connection string, or (no region) the multi-host one the APIs use."""
        regions = [region] if region else REGIONS
        hosts = ",".join(address(r) for r in regions)
        ports = ",".join(str(self.state["postgres"][r]["port"]) for r in regions)
        info = f"host={hosts} port={ports} user=postgres dbname=lab connect_timeout=1"
        if not region:
            info += " target_session_attrs=read-write"
        for key, value in extra.items():
            info += f" {key}={value}"
        return info

    def status(self, region=None):
        """`/v1/status` of the agent in `region`, or of the first that answers."""
        for r in [region] if region else REGIONS:
            try:
                code, body = http_json("GET", f"{self.admin(r)}/v1/status", timeout=2)
                if code == 200:
                    return body
            except OSError:
                continue
        raise RuntimeError("no agent answers")

    def metric(self, region, name):
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
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def history(self, limit=200):
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

    def leader(self):
        for region in REGIONS:
            try:
                leader = self.status(region)["cluster"]["leader"]
                if leader:
                    return leader
            except (OSError, RuntimeError, KeyError):
                continue
        return None

    def link(self, name, **change):
        code, body = http_json(
            "POST", f"{self.state['links']['control']}/links/{name}", change, timeout=3)
        if code != 200:
            raise RuntimeError(f"cannot change link {name}: {body}")
        return body

    def links_of(self, region, kinds=("peer",)):
        """The names of every link into or out of `region`'s agent, of these kinds."""
        return [name for name in self.state["links"]["names"]
                if name.split(":")[0] in kinds and region in name.split(":")[1].split(">")]

    # --- process control ------------------------------------------------------------------

    def spawn(self, key, argv, log, env=None, cwd=None):
        """Starts a process in its own session; records its PID under `key`."""
        with open(os.path.join(self.dir, log), "ab") as out:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd,
                env=dict(os.environ, **(env or {})), start_new_session=True)
        self.state["pids"][key] = child.pid
        self.save()
        return child.pid

    def kill(self, key, sig=signal.SIGKILL):
        """Stops the process the lab recorded as `key`; waits until it is gone."""
        pid = self.state["pids"].get(key)
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
                self.state["pids"].pop(key, None)
                self.save()

    def signal(self, key, sig):
        """Sends `sig` to the process the lab recorded as `key` (SIGSTOP freezes it)."""
        os.kill(self.state["pids"][key], sig)

    def postmaster_pid(self, region):
        with open(os.path.join(self.state["postgres"][region]["data"], "postmaster.pid")) as f:
            return int(f.readline())

    def kill_postgres(self, region):
        """SIGKILL of the postmaster: the crash of a primary, not a clean shutdown."""
        pid = self.postmaster_pid(region)
        os.kill(pid, signal.SIGKILL)
        wait_until(f"postgres {region} to die", 15, lambda: not pid_alive(pid), 0.05)

    def kill_region(self, region):
        """A region lost at once: SIGKILL of its API, Postgres, Redis and agent, all sent
        before waiting for any of them to go."""
        keys = [k for k in (f"api:{region}", f"redis:sessions-{region}", f"agent:{region}")
                if self.state["pids"].get(k)]
        pids = [self.state["pids"][k] for k in keys] + [self.postmaster_pid(region)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key in keys:
            self.kill(key)
        wait_until(f"postgres {region} to die", 15, lambda: not pid_alive(pids[-1]), 0.05)

    def start_agent(self, region):
        agent = self.state["agents"][region]
        self.spawn(f"agent:{region}", [self.state["bin"], "run", "--config", agent["config"]],
                   f"agent-{region}.log")

    def start_api(self, region):
        api = self.state["apis"][region]
        self.spawn(f"api:{region}", [self.state["python"], os.path.join(CHAOS, "api.py"),
                                     region, address(region), str(api["port"]),
                                     self.pg_conninfo()], f"api-{region}.log")

    # --- teardown -------------------------------------------------------------------------

    def stop(self):
        """Stops every process the lab started, then removes its directory."""
        for key in sorted(self.state["pids"], key=lambda k: not k.startswith("agent")):
            pid = self.state["pids"][key]
            try:
                os.kill(pid, signal.SIGTERM if key.startswith("agent") else signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key, pid in list(self.state["pids"].items()):
            try:
                wait_until(f"{key} to exit", 12, lambda: not pid_alive(pid) or _reap(pid), 0.05)
            except TimeoutError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for region in REGIONS:
            data = self.state.get("postgres", {}).get(region, {}).get("data")
            if data and os.path.exists(os.path.join(data, "postmaster.pid")):
                subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate",
                                            "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- bring-up -------------------------------------------------------------------------

    @classmethod
    def start(cls, directory=None, progress=say, automatic=True):
        """Brings a lab up in `directory` (a new temporary one by default)."""
        steps = 8
        step = iter(range(1, steps + 1))

        def phase(text):
            progress(f"[{next(step)}/{steps}] {text}")

        phase("checking packages")
        check_packages()
        python = tool(os.path.join(CHAOS, "venv.sh"))
        ministack_bin = tool(os.path.join(ROOT, "scripts", "ministack-venv.sh"))
        if directory:
            os.makedirs(directory)
        else:
            directory = tempfile.mkdtemp(prefix="failoverd-lab.")
        os.chmod(directory, 0o755)
        if os.getuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        lab = cls({"dir": directory, "pids": {}, "python": python,
                   "token": secrets.token_hex(16), "created": time.time()})
        lab.save()
        try:
            lab._bring_up(phase, ministack_bin, automatic)
        except BaseException:
            # Said on stderr even when the caller keeps the steps quiet (the benchmarks).
            say(f"the lab did not come up; its logs were in {directory}")
            lab.dump_logs(say)
            lab.stop()
            raise
        return lab

    def dump_logs(self, progress=say, lines=15):
        for name in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    tail = f.readlines()[-lines:]
                progress(f"--- {name}\n" + "".join(tail))

    def _bring_up(self, phase, ministack_bin, automatic):
        state, d = self.state, self.dir

        phase("building failoverd")
        binary = os.environ.get("FAILOVERD_BIN")
        if not binary:
            subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "failoverd"],
                           check=True, cwd=ROOT)
            binary = os.path.join(ROOT, "target", "debug", "failoverd")
        state["bin"] = binary

        phase("starting ministack (Route53) with the zone lab.example.")
        port = free_port()
        state["ministack"] = {"url": f"http://127.0.0.1:{port}"}
        self.spawn("ministack", [ministack_bin], "ministack.log", cwd=d,
                   env={"GATEWAY_PORT": str(port), "BIND_HOST": "127.0.0.1"})
        wait_until("ministack to answer", 30, lambda: urllib.request.urlopen(
            f"{state['ministack']['url']}/_ministack/health", timeout=1).status == 200)
        r53 = Route53(state["ministack"]["url"])
        state["ministack"]["zone_id"] = r53.create_zone()
        for i, region in enumerate(REGIONS):
            r53.upsert_weighted(region, 100, f"192.0.2.{i + 1}")
        for name, value in (("aws-access-key-id", "lab"), ("aws-secret-access-key", "lab")):
            with open(os.path.join(d, name), "w") as f:
                f.write(value + "\n")
        self.save()

        phase("starting Postgres 15: primary eu-west-3, streaming replicas in the others")
        state["postgres"] = {}
        for region in REGIONS:
            state["postgres"][region] = {"port": free_port(address(region)),
                                         "data": os.path.join(d, f"pg-{region}")}
        primary = state["postgres"]["eu-west-3"]
        subprocess.run(as_postgres([f"{PG_BIN}/initdb", "-D", primary["data"], "-U", "postgres",
                                    "--auth=trust", "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True)

        def configure(region):
            member = state["postgres"][region]
            with open(os.path.join(member["data"], "postgresql.conf"), "a") as f:
                f.write(f"""
port = {member['port']}
listen_addresses = '{address(region)}'
unix_socket_directories = '{d}'
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_sender_timeout = 5s
wal_receiver_status_interval = 1s
wal_keep_size = 256MB
cluster_name = 'pg-{region}'
fsync = off
""")

        def pg_start(region):
            member = state["postgres"][region]
            subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", member["data"], "-l",
                                        os.path.join(d, f"pg-{region}.log"), "-w", "start"]),
                           check=True, capture_output=True)

        configure("eu-west-3")
        pg_start("eu-west-3")
        subprocess.run(["psql", f"host={address('eu-west-3')} port={primary['port']} "
                        "user=postgres dbname=postgres", "-qc", "CREATE DATABASE lab"],
                       check=True, capture_output=True)
        subprocess.run(["psql", self.pg_conninfo("eu-west-3"), "-qc",
                        "CREATE TABLE writes (seq bigint PRIMARY KEY, region text NOT NULL, "
                        "at timestamptz NOT NULL DEFAULT clock_timestamp())"],
                       check=True, capture_output=True)
        for region in REGIONS[1:]:
            member = state["postgres"][region]
            subprocess.run(as_postgres([
                f"{PG_BIN}/pg_basebackup", "-h", address("eu-west-3"), "-p",
                str(primary["port"]), "-U", "postgres", "-D", member["data"], "-R", "-X",
                "stream", "-c", "fast", "-d", f"application_name=pg-{region}"]),
                check=True, capture_output=True)
            configure(region)
            pg_start(region)
        self.save()

        phase("starting Redis: sessions (master eu-west-3), carts (master eu-central-1)")
        state["redis"] = {}
        for shard, master, replica in (("sessions", "eu-west-3", "eu-central-1"),
                                       ("carts", "eu-central-1", "us-east-1")):
            for role, region in (("master", master), ("replica", replica)):
                port = free_port(address(region))
                name = f"{shard}-{region}"
                state["redis"][name] = {"shard": shard, "region": region, "port": port,
                                        "url": f"redis://{address(region)}:{port}"}
                argv = ["redis-server", "--port", str(port), "--bind", address(region),
                        "--save", "", "--appendonly", "no", "--protected-mode", "no",
                        "--dir", d, "--repl-diskless-sync-delay", "0"]
                if role == "replica":
                    argv += ["--replicaof", address(master),
                             str(state["redis"][f"{shard}-{master}"]["port"])]
                self.spawn(f"redis:{name}", argv, f"redis-{name}.log")
        for name, member in state["redis"].items():
            wait_until(f"redis {name}", 15, lambda m=member: subprocess.run(
                ["redis-cli", "-h", address(m["region"]), "-p", str(m["port"]), "ping"],
                capture_output=True, text=True).stdout.strip() == "PONG")

        phase("starting the links between regions and one API per region")
        agents = {}
        for region in REGIONS:
            agents[region] = {"admin_port": free_port(address(region)),
                              "peer_port": free_port(address(region))}
            agents[region]["admin_url"] = f"http://{address(region)}:{agents[region]['admin_port']}"
        state["apis"] = {r: {"port": free_port(address(r))} for r in REGIONS}
        for r in REGIONS:
            state["apis"][r]["url"] = f"http://{address(r)}:{state['apis'][r]['port']}"
        specs = []
        for a in REGIONS:
            for b in REGIONS:
                if a == b:
                    continue
                specs.append({"name": f"peer:{a}>{b}", "listen_port": free_port(),
                              "target_host": address(b), "target_port": agents[b]["peer_port"],
                              "delay_ms": latency_ms(a, b)})
                specs.append({"name": f"api:{a}>{b}", "listen_port": free_port(),
                              "target_host": address(b), "target_port": state["apis"][b]["port"],
                              "delay_ms": latency_ms(a, b)})
        with open(os.path.join(d, "links.json"), "w") as f:
            json.dump(specs, f, indent=2)
        control = free_port()
        state["links"] = {"control": f"http://127.0.0.1:{control}",
                          "names": [s["name"] for s in specs],
                          "ports": {s["name"]: s["listen_port"] for s in specs}}
        self.spawn("links", [sys.executable, os.path.join(CHAOS, "links.py"),
                             os.path.join(d, "links.json"), str(control)], "links.log")
        wait_until("the links", 10, lambda: http_json("GET", f"{state['links']['control']}/links"))
        for region in REGIONS:
            self.start_api(region)
        for region in REGIONS:
            wait_until(f"api {region}", 20, lambda r=region: http_json(
                "GET", f"{state['apis'][r]['url']}/health")[0] == 200)

        phase("starting one failoverd agent per region")
        secret = os.path.join(d, "cluster-secret")
        with open(secret, "w") as f:
            f.write(secrets.token_hex(24) + "\n")
        token_file = os.path.join(d, "admin-token")
        with open(token_file, "w") as f:
            f.write(self.token + "\n")
        os.chmod(token_file, 0o600)
        state["token_file"] = token_file
        for region in REGIONS:
            agents[region]["config"] = os.path.join(d, f"agent-{region}.toml")
            with open(agents[region]["config"], "w") as f:
                f.write(self._agent_config(region, agents, secret, token_file, automatic))
        state["agents"] = agents
        self.save()
        for region in REGIONS:
            subprocess.run([state["bin"], "check-config", agents[region]["config"]], check=True,
                           capture_output=True)
            self.start_agent(region)

        phase("waiting for a leader, every target up and the primaries named")
        self.wait_healthy(60)

    def _agent_config(self, region, agents, secret, token_file, automatic):
        d, state = self.dir, self.state
        # The lab runs production defaults; FAILOVERD_LAB_LEASE_TTL (e.g. "5s") overrides one,
        # to compare lease periods with the same drills.
        lease = os.environ.get("FAILOVERD_LAB_LEASE_TTL")
        lease_line = f'lease_ttl = "{lease}"\n' if lease else ""
        lines = [f"""# Written by chaos/lab for agent {region}-a.
[agent]
id = "{region}-a"
region = "{region}"
admin_listen = "{address(region)}:{agents[region]['admin_port']}"
peer_listen = "{address(region)}:{agents[region]['peer_port']}"
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
            port = state["links"]["ports"][f"peer:{region}>{peer}"]
            lines.append(f"""
[[peers]]
id = "{peer}-a"
region = "{peer}"
peer_url = "http://127.0.0.1:{port}"
admin_url = "{agents[peer]['admin_url']}"
""")
        for other in REGIONS:
            url = (state["apis"][other]["url"] if other == region else
                   f"http://127.0.0.1:{state['links']['ports'][f'api:{region}>{other}']}")
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
            pg = state["postgres"][member]
            lines.append(f"""[[postgres.members]]
name = "pg-{member}"
region = "{member}"
dsn = "host={address(member)} port={pg['port']} user=postgres dbname=postgres"
""")
        for shard in ("sessions", "carts"):
            lines.append(f"""
[[redis.shards]]
name = "{shard}"
mode = "replication"
""")
            for name, member in state["redis"].items():
                if member["shard"] == shard:
                    lines.append(f"""[[redis.shards.members]]
name = "{name}"
region = "{member['region']}"
url = "{member['url']}"
""")
        lines.append(f"""
[route53]
zone_id = "{state['ministack']['zone_id']}"
record_name = "{RECORD}"
record_type = "A"
ttl = 30
endpoint_url = "{state['ministack']['url']}"
credentials = {{ access_key_id = {{ file = "{d}/aws-access-key-id" }}, secret_access_key = {{ file = "{d}/aws-secret-access-key" }} }}
""")
        for i, other in enumerate(REGIONS):
            lines.append(f"""
[route53.regions.{other}]
set_identifier = "{other}"
value = "192.0.2.{i + 1}"
""")
        return "".join(lines)

    def wait_healthy(self, deadline_s):
        """Until the agents agree on a leader that names both primaries, sees every target
        Up and a candidate for every Postgres and Redis group."""

        def healthy():
            status = self.status(self.leader_region())
            cluster = status["cluster"]
            targets = (cluster.get("verdict") or {}).get("targets", {})
            # 3 APIs, 3 Postgres members, 4 Redis members: each reported Up, Down by none.
            if len(targets) < 10:
                raise AssertionError(f"the leader has a verdict on {len(targets)} targets")
            bad = [k for k, v in targets.items() if not v.get("up") or v.get("down")]
            bad += [k for k, v in targets.items() if k.startswith("http/") and v["state"] != "up"]
            if bad:
                raise AssertionError(f"not up: {', '.join(sorted(set(bad)))}")
            missing = {"postgres/main", "redis/sessions", "redis/carts"} - set(
                cluster.get("primaries", {}))
            if missing:
                raise AssertionError(f"no primary named for {', '.join(sorted(missing))}")
            choice = cluster["failover_readiness"].get("postgres/main", {}).get("choice", {})
            if choice.get("decision") != "promote":
                raise AssertionError(f"no Postgres candidate: {choice}")
            return True

        wait_until("a healthy lab", deadline_s, healthy, 0.5)

    def leader_region(self):
        leader = self.leader()
        return leader[:-2] if leader else REGIONS[0]


def _reap(pid):
    """Collects a child that exited (our own children only); True once it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return not pid_alive(pid)


def random_region(weights):
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
