"""What every drill does: bring up a lab of its own, run the workload, inject one fault, wait
for what must follow (bounded), check the invariants, print one result line, tear down.

Invariants, for every drill: no moment with two Postgres members committing writes, no
acknowledged write lost, no failover that the fault does not explain. A drill that expects a
failover also needs it completed and writes flowing again within the platform's 30 s. A drill
with an in-region writer (`region_writer`) also fails when its region's old primary
acknowledged a write after another member took writes (overlap: split brain as the region's
clients see it), and, in sync mode, when one of its acknowledged writes was lost.

Options: --json FILE (write the result there), --keep (leave the lab up on failure, to look).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import lablib
import workload as wl

RTO_LIMIT_S = 30.0

# A failover's trigger, as the history records it (`kind`, `region`, `target`, `group`...).
Trigger = dict[str, Any]


@dataclass
class Context:
    """What a drill's fault function gets: the lab, the workload (and the in-region writer,
    if the drill runs one) and a place for notes."""

    lab: lablib.Lab
    load: wl.Workload
    writer: wl.RegionWriter | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    # When the fault was injected: monotonic seconds, and wall-clock milliseconds (as the
    # agents record their history).
    fault_at: float = 0.0
    fault_ms: int = 0
    # The primary of each Postgres group and Redis replication shard before the fault.
    primaries_before: dict[str, str] = field(default_factory=dict)

    def require(self, ok: object, message: str) -> None:
        if not ok:
            self.violations.append(message)

    def failovers(self) -> list[dict[str, Any]]:
        """The failovers decided since the fault, oldest first."""
        entries = [e for e in self.lab.history() if e.get("type") == "failover"]
        return sorted((e for e in entries if e["decision"]["decided_at_ms"] >= self.fault_ms),
                      key=lambda e: e["epoch"])

    def wait_failover(self, deadline_s: float = 60) -> dict[str, Any]:
        """Until a failover decided since the fault has ended; returns it."""
        def ended() -> dict[str, Any] | None:
            done = [f for f in self.failovers() if f.get("outcome")]
            return done[0] if done else None
        return lablib.wait_until("a failover to end", deadline_s, ended, 0.2)

    def wait_redundancy(self, group: str = "postgres/main", deadline_s: float = 120) -> None:
        """Until the leader shows every other member of `group` streaming from its primary
        (the old primary rejoined, each replica repointed); notes the seconds since the fault
        as `redundancy_restored_s`, or a violation when it is not so within `deadline_s`."""
        lab = self.lab

        def full() -> bool:
            g = lab.status(lab.leader_region())["cluster"]["redundancy"][group]
            return g["replicas"] > 0 and g["streaming"] == g["replicas"]
        try:
            lablib.wait_until(f"{group} back to full redundancy", deadline_s, full, 0.5)
            self.notes["redundancy_restored_s"] = round(time.monotonic() - self.fault_at, 1)
        except TimeoutError as e:
            try:
                shown = lab.status(lab.leader_region())["cluster"]["redundancy"].get(group)
            except lablib.NOT_YET as error:
                shown = str(error)
            self.violations.append(f"{e}: {json.dumps(shown)[:400]}")

    def primaries(self) -> dict[str, str]:
        """The primary the leader names for each Postgres group and Redis replication
        shard."""
        return dict(self.lab.status(self.lab.leader_region())["cluster"]["primaries"])

    def wait_primaries_home(self, deadline_s: float = 120) -> None:
        """Until every group's primary is the one it had before the fault; notes the seconds
        since the fault as `primaries_home_s`, or a violation."""
        try:
            # The log names a primary when its promotion is decided: home means named, and no
            # failover still under way.
            lablib.wait_until(
                "the primaries back where they were", deadline_s,
                lambda: (self.primaries() == self.primaries_before
                         and all(f.get("outcome") for f in self.failovers())), 0.5)
            self.notes["primaries_home_s"] = round(time.monotonic() - self.fault_at, 1)
        except TimeoutError as e:
            self.violations.append(f"{e}: before {self.primaries_before}, now "
                                   f"{self.primaries()}")

    def wait_writes(self, for_s: float = 3, deadline_s: float = 60) -> None:
        """Until every write of the last `for_s` seconds succeeded."""
        lablib.wait_until(f"writes to succeed for {for_s} s", deadline_s,
                          lambda: self.load.succeeding(self.fault_at, for_s), 0.2)


def trigger_text(trigger: Trigger) -> str:
    kind = trigger.get("kind")
    if kind == "region_down":
        return f"region {trigger['region']} down"
    if kind == "primary_down":
        return f"primary {trigger['target']} down"
    return str(kind)


def redis_promoted_at(ctx: Context, shard: str, old: str) -> float | None:
    """When (monotonic seconds) a member of `shard` other than `old` was first promoted since
    the fault, as the leader's history records the promotion step's end; None if none was."""
    finished = [st["finished_ms"] for f in ctx.failovers() for st in f["steps"]
                if st["id"].startswith("redis-promote:") and st["state"] == "succeeded"
                and st.get("finished_ms") and f"redis/{shard}/" in st["id"]
                and not st["id"].endswith(f"/{old}")]
    return ctx.fault_at + (min(finished) - ctx.fault_ms) / 1000 if finished else None


def run(
    name: str,
    inject: Callable[[Context], None],
    expect_failover: bool,
    explained: Callable[[Trigger], object],
    check: Callable[[Context], None] | None = None,
    description: str = "",
    region_writer: str | None = None,
) -> None:
    """Runs drill `name`. `inject(ctx)` injects the fault and waits for what must follow;
    `expect_failover`: whether one must complete (and writes be back within RTO_LIMIT_S);
    without it a failover may still happen, if `explained(trigger)` says the fault explains
    its trigger. `check(ctx)` adds drill-specific checks after the workload stopped.
    `region_writer`: a region whose in-region writer (`workload.RegionWriter`) runs from
    before the fault."""
    parser = argparse.ArgumentParser(prog=f"chaos/drills/{name}", description=description)
    parser.add_argument("--json", help="write the result as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="leave the lab up on failure")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    # A drill stopped from outside (Ctrl-C, run-all interrupted, a CI timeout) still tears
    # its lab down.
    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    lab = lablib.Lab.start(progress=progress)
    load = wl.Workload(lab)
    watch = wl.SplitBrainWatch(lab)
    writer = wl.RegionWriter(lab, region_writer) if region_writer else None
    ctx = Context(lab, load, writer)
    result: dict[str, Any] = {"drill": name, "sync": lab.state.sync}
    try:
        load.start()
        watch.start()
        if writer:
            writer.start()
        progress("workload running; waiting for a steady state")
        ctx.fault_at = time.monotonic()
        lablib.wait_until("steady writes", 30, lambda: load.succeeding(started, 3), 0.2)
        ctx.primaries_before = ctx.primaries()
        ctx.fault_at = time.monotonic()
        ctx.fault_ms = int(time.time() * 1000)
        progress("injecting the fault")
        inject(ctx)
        load.stop()
        watch.stop()
        if writer:
            writer.stop()
        result.update(wl.report(lab, load, watch, ctx.fault_at))
        failovers = ctx.failovers()
        false = [f for f in failovers if not explained(f["decision"]["trigger"])]
        result["failovers"] = [
            {"epoch": f["epoch"], "trigger": trigger_text(f["decision"]["trigger"]),
             "outcome": f.get("outcome"), "duration_s": (f.get("duration_ms") or 0) / 1000}
            for f in failovers]
        result["false_failovers"] = len(false)
        result["failed_steps"] = [
            {"epoch": f["epoch"], "step": st["id"], "detail": st.get("detail")}
            for f in failovers for st in f["steps"] if st["state"] == "failed"]
        done = [f for f in failovers if f.get("outcome") == "completed"]
        if expect_failover:
            ctx.require(done, "no failover completed" + "".join(
                f"; {st['step']} failed: {st['detail']}" for st in result["failed_steps"]))
            ctx.require(result["rto_s"] <= RTO_LIMIT_S,
                        f"writes were unavailable for {result['rto_s']} s (limit {RTO_LIMIT_S})")
        if done:
            result["failover_s"] = round((done[0].get("duration_ms") or 0) / 1000, 2)
        if failovers:
            # Milestones from the fault, as the leader recorded them: when each failover was
            # first seen, decided and done, and when each of its steps succeeded.
            def since(ms: int) -> float:
                return round((ms - ctx.fault_ms) / 1000, 2)

            result["milestones"] = milestones = {}
            for f in failovers:
                milestones.setdefault("detected", since(f["decision"]["first_seen_ms"]))
                milestones[f"decided:{f['epoch']}"] = since(f["decision"]["decided_at_ms"])
                for step in f["steps"]:
                    if step.get("finished_ms") and step["state"] == "succeeded":
                        milestones[step["id"]] = since(step["finished_ms"])
                if f.get("finished_ms"):
                    milestones["done"] = max(milestones.get("done", 0), since(f["finished_ms"]))
        ctx.require(result["split_brain_samples"] == 0,
                    f"two writable primaries at {result['split_brain']}")
        ctx.require(result["lost"] == 0, f"{result['lost']} acknowledged writes lost: "
                    f"{result['lost_seqs']}")
        ctx.require(not false, "failovers the fault does not explain: " + ", ".join(
            trigger_text(f["decision"]["trigger"]) for f in false))
        if writer:
            local = result["local"] = wl.local_report(
                lab, writer, load, ctx.fault_at,
                redis_promoted_at(ctx, "sessions", writer.redis_member))
            for store in ("postgres", "redis"):
                s = local[store]
                ctx.require(s["overlap"] == 0, (
                    f"split brain: {writer.region}'s {store} acknowledged {s['overlap']} "
                    f"in-region writes after {s['final_primary']} took writes "
                    f"(at {s['other_took_writes_at_s']} s; overlap {s['overlap_window_s']} s)"))
                ctx.require(not lab.state.sync or s["lost"] == 0, (
                    f"{s['lost']} acknowledged in-region {store} writes lost in sync mode "
                    f"(between {s['lost_window_s']} s)"))
        if check:
            check(ctx)
    # The drill's boundary: whatever went wrong (a deadline passed, an agent answered
    # something unexpected, Ctrl-C or SIGTERM) is reported as a violation, with its traceback
    # unless it was an interruption, and the lab is torn down below; the drill then fails.
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        ctx.violations.append(f"{type(e).__name__}: {e}")
        if not isinstance(e, KeyboardInterrupt):
            traceback.print_exc()
    finally:
        load.stop()
        watch.stop()
        if writer:
            writer.stop()
        result["notes"] = ctx.notes
        result["violations"] = ctx.violations
        result["passed"] = not ctx.violations
        result["took_s"] = round(time.monotonic() - started, 1)
        if ctx.violations and args.keep:
            progress(f"kept the lab in {lab.dir} (chaos/lab down does not know it: "
                     f"python3 -c 'import lablib; lablib.Lab.load(\"{lab.dir}\").stop()')")
        else:
            if ctx.violations:
                lab.dump_logs(progress, lines=8)
            lab.stop()
    line = (f"{name:<20} {'PASS' if result['passed'] else 'FAIL'}  "
            f"rto {result.get('rto_s', '-')} s  lost {result.get('lost', '-')}  "
            f"false failovers {result.get('false_failovers', '-')}  "
            f"split brain {result.get('split_brain_samples', '-')}")
    if "milestones" in result:
        m = result["milestones"]
        promoted = [v for k, v in m.items() if k.startswith(("promote:", "redis-promote:"))]
        dns = [v for k, v in m.items() if k.startswith("route53:")]
        line += f"  detected {m.get('detected', '-')} s"
        if dns:
            line += f"  dns {min(dns)} s"
        if promoted:
            line += f"  promoted {max(promoted)} s"
        line += f"  done {m.get('done', '-')} s"
    if "local" in result:
        local = result["local"]
        line += f"  sync {'on' if result['sync'] else 'off'}"
        for store in ("postgres", "redis"):
            s = local[store]
            line += (f"  local {store}: ok {s['acked']} hung {s['hung']} failed {s['failed']}"
                     f" lost {s['lost']}")
            if s["lost_window_s"]:
                line += f" ({s['lost_window_s'][0]}..{s['lost_window_s'][1]} s)"
            line += f" overlap {s['overlap']}"
        if result["sync"]:
            line += f"  hung-commit samples {result.get('hung_commit_samples', '-')}"
    for key, value in ctx.notes.items():
        line += f"  {key} {value}"
    if ctx.violations:
        line += "  -- " + "; ".join(ctx.violations)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    sys.exit(0 if result["passed"] else 1)


def in_region(trigger: Trigger, region: str) -> bool:
    """Whether a trigger concerns `region` (its API, or a member that lives there)."""
    if trigger.get("region") == region:
        return True
    target = trigger.get("target", "")
    name = target.rsplit("/", 1)[-1]
    return name.endswith(region)

