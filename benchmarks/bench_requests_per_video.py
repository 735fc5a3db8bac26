"""Requests per video: HTTP calls per completed generation with the default poll policy.

1. Simulation (no waiting): the trigger's own loop (``KirinTaskTrigger.run``) replayed on a
   simulated clock with the real wait engine ``airflow_provider_kirin.core.waiting.Wait``
   (``next``, ``record``) and the operator's defaults (``core/defaults.py``:
   ``FIRST_POLL_DELAY``, ``POLL_INTERVAL``, ``TIMEOUT``, ``EXPECTED_SECONDS`` for a 5 s ``std``
   clip), for generations of 30, 60, 120 and 300 s, many times each (the first check has a random
   phase). Beside it, the peer: ``HttpSensorTrigger`` at the same interval (it checks at once,
   then every interval).
2. Validation (real, scaled down): the same policy with every time divided by ``--scale`` (20;
   quick 40), against one emulator process per generation length. Each task is submitted the way
   the operator does it (``KirinHook.submit_idempotent``: a lookup, then one create), then waited
   for by a real ``KirinTaskTrigger`` with the operator's arguments; the emulators count the
   requests. The status requests they counted must fall inside the range the simulation predicts
   for the same number of tasks, and every task must have been created exactly once.

Run: ``python benchmarks/bench_requests_per_video.py [--quick] [--n 10] [--scale 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchResult, EmulatorProcess, Row, Worker, emit, venv_env, verdict

LENGTHS = (30.0, 60.0, 120.0, 300.0)
MODE, DURATION = "std", "5"  # the operator's defaults
SIMULATIONS = 2000


@dataclasses.dataclass(frozen=True)
class Policy:
    """The operator's poll settings, all times in seconds (scaled together for real runs)."""

    first_poll_delay: float
    poll_interval: float
    timeout: float
    expected_seconds: float | None

    @classmethod
    def default(cls) -> Policy:
        from airflow_provider_kirin.core import defaults

        expected = getattr(defaults, "EXPECTED_SECONDS", {}).get((MODE, DURATION))
        return cls(defaults.FIRST_POLL_DELAY, defaults.POLL_INTERVAL, defaults.TIMEOUT, expected)

    def scaled(self, factor: float) -> Policy:
        expected = None if self.expected_seconds is None else self.expected_seconds / factor
        return Policy(
            self.first_poll_delay / factor, self.poll_interval / factor, self.timeout / factor, expected
        )


def _envelopes() -> dict[str, Any]:
    """A ``processing`` and a ``completed`` :class:`KirinTask`, as the emulator would send them."""
    from airflow_provider_kirin.emulator.state import EmulatorState
    from airflow_provider_kirin.emulator.validation import validate_create
    from airflow_provider_kirin.models import KirinTask

    params = validate_create({"model": "kirin_v2_5_turbo_t2v", "prompt": "simulation"})
    task = EmulatorState().create_task(params, origin="http://127.0.0.1:1")
    return {s: KirinTask.model_validate(task.envelope(s)) for s in ("processing", "completed")}


def simulate_polls(
    generation: float, policy: Policy, tasks: dict[str, Any], rng_seed: int
) -> tuple[int, float]:
    """Status requests one wait makes for a generation of ``generation`` seconds, and how late it
    noticed the completion: the real wait engine (``core.waiting.Wait``), step for step, on a
    simulated clock."""
    from airflow_provider_kirin.core.steps import Sleep
    from airflow_provider_kirin.core.waiting import Outcome, Wait

    random.seed(rng_seed)  # the wait draws its phase from the module-level generator
    start = 1_000_000.0  # the task is created, and the operator defers, at this instant
    wait = Wait(
        "sim",
        deadline=start + policy.timeout,
        poll_interval=policy.poll_interval,
        first_check_at=start + policy.first_poll_delay,
        expected_seconds=policy.expected_seconds,
        started=start,
        logger=_QUIET,
    )
    now = start
    while not isinstance(step := wait.next(now=now), Outcome):
        if isinstance(step, Sleep):
            now += step.seconds
            continue
        wait.record(tasks["completed"] if now >= start + generation else tasks["processing"], now=now)
    if step.ok:
        return wait.checks, now - (start + generation)
    return wait.checks, math.inf


def peer_polls(generation: float, interval: float) -> int:
    """``HttpSensorTrigger``: a check at once, then one every ``interval`` until the resource exists."""
    return math.floor(generation / interval) + 1


_QUIET = logging.getLogger("kirin.bench.simulation")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def simulate(
    lengths: Sequence[float], policy: Policy, runs: int = SIMULATIONS
) -> dict[float, list[tuple[int, float]]]:
    """``runs`` simulated waits per generation length: ``[(status requests, noticed after)]``."""
    tasks = _envelopes()
    return {g: [simulate_polls(g, policy, tasks, seed) for seed in range(runs)] for g in lengths}


def simulate_latency(length: float, policy: Policy, runs: int = SIMULATIONS) -> list[float]:
    """How late completions are noticed for generations spread evenly over ``[length, length +
    poll_interval)`` (at exactly ``length`` the answer would only reflect the first check's phase)."""
    tasks = _envelopes()
    return [
        simulate_polls(length + policy.poll_interval * i / runs, policy, tasks, i)[1] for i in range(runs)
    ]


def sum_range(samples: Sequence[int], k: int, draws: int = 2000) -> tuple[int, int]:
    """The range of the total of ``k`` independent draws from ``samples`` (Monte Carlo, 0.1 %-99.9 %)."""
    rng = random.Random(12345)
    totals = sorted(sum(rng.choice(samples) for _ in range(k)) for _ in range(draws))
    return totals[int(0.001 * (draws - 1))], totals[int(0.999 * (draws - 1))]


# -- real, scaled-down run (in a worker process: the triggers' logs stay out of the table) ----------
def worker_main() -> int:
    """Submit each group's tasks like the operator, wait for them with real triggers, report."""
    spec = json.loads(sys.stdin.readline())
    policy = Policy(**spec["policy"])
    from airflow_provider_kirin.hooks.kirin import KirinHook
    from airflow_provider_kirin.models import KirinVideoRequest
    from airflow_provider_kirin.triggers.kirin import KirinTaskTrigger

    accepts = set(inspect.signature(KirinTaskTrigger).parameters)
    triggers = []
    for group in spec["groups"]:
        hook = KirinHook(kirin_conn_id=group["conn_id"])
        for i in range(spec["tasks"]):
            request = KirinVideoRequest.build(
                prompt="rpv", duration=DURATION, mode=MODE, external_task_id=f"rpv-{group['conn_id']}-{i}"
            )
            task, _ = hook.submit_idempotent(request)
            now = time.time()  # the operator defers right after the submission
            kwargs: dict[str, Any] = {
                "kirin_task_id": task.task_id,
                "kirin_conn_id": group["conn_id"],
                "poll_interval": policy.poll_interval,
                "deadline": now + policy.timeout,
                "first_poll_at": now + policy.first_poll_delay,
                "started_at": now,
                "expected_seconds": policy.expected_seconds,
            }
            triggers.append(KirinTaskTrigger(**{k: v for k, v in kwargs.items() if k in accepts}))

    async def wait(trigger: Any) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "no event"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(wait(t) for t in triggers)))

    statuses = asyncio.run(main())
    # The simulation runs here too (it needs the package, which imports Airflow), after the real
    # run: it reseeds the module-level random generator that the wait engine uses.
    lengths = [group["length"] for group in spec["groups"]]
    emit("done", {"statuses": statuses, "simulated": _simulated(lengths, Policy(**spec["default_policy"]))})
    return 0


def _simulated(lengths: Sequence[float], policy: Policy) -> dict[str, Any]:
    sims = simulate(lengths, policy)
    return {
        str(g): {
            "polls": [p for p, _ in sims[g]],
            "late": [d for d in simulate_latency(g, policy, SIMULATIONS // 4) if math.isfinite(d)],
        }
        for g in lengths
    }


def validate(
    lengths: Sequence[float], policy: Policy, scale: float, tasks: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the scaled-down policy for real, one emulator process per length; return their counts
    and the simulation of the unscaled policy (run in the same worker)."""
    scaled = policy.scaled(scale)
    emulators = [EmulatorProcess(pending_seconds=0.0, processing_seconds=g / scale) for g in lengths]
    try:
        for emu in emulators:
            emu.start()
        conn_ids = [f"kirin_rpv_{i}" for i in range(len(lengths))]
        groups: list[dict[str, Any]] = [
            {"conn_id": c, "length": g} for c, g in zip(conn_ids, lengths, strict=True)
        ]
        env = venv_env(
            **{f"AIRFLOW_CONN_{c.upper()}": e.conn_json for c, e in zip(conn_ids, emulators, strict=True)}
        )
        with tempfile.TemporaryDirectory(prefix="kirin-bench-rpv-") as tmp:
            env["AIRFLOW_HOME"] = tmp
            worker = Worker([str(Path(__file__).resolve()), "--worker"], Path(tmp) / "worker.log", env)
            try:
                worker.send(
                    {
                        "policy": dataclasses.asdict(scaled),
                        "default_policy": dataclasses.asdict(policy),
                        "groups": groups,
                        "tasks": tasks,
                    }
                )
                done = worker.expect("done", timeout=max(lengths) / scale + 180)
                worker.wait(30)
            finally:
                worker.close()
        results = []
        for i, (group, emu) in enumerate(zip(groups, emulators, strict=True)):
            stats = emu.stats()
            statuses = done["statuses"][i * tasks : (i + 1) * tasks]
            results.append(
                {
                    "length": group["length"],
                    "tasks": tasks,
                    "succeeded": statuses.count("success"),
                    "gets": stats["gets"],
                    "creates": stats["creates"],
                    "create_requests": stats["create_requests"],
                    "lookups": stats["lookups"],
                }
            )
        return results, done["simulated"]
    finally:
        for emu in emulators:
            emu.stop()


def run(lengths: Sequence[float], scale: float, tasks: int) -> BenchResult:
    policy = Policy.default()
    real, sims = validate(lengths, policy, scale, tasks)
    rows: list[Row] = []
    raw: dict[str, Any] = {"policy": dataclasses.asdict(policy), "scale": scale, "lengths": {}}
    for g in lengths:
        polls, late = sims[str(g)]["polls"], sims[str(g)]["late"]
        mean = statistics.fmean(polls)
        peer = peer_polls(g, policy.poll_interval)
        b = f"requests/video, {g:.0f} s generation"
        rows.append(
            Row(
                b,
                "status requests per video (simulated mean, min-max)",
                f"{mean:.2f} ({min(polls)}-{max(polls)})",
                f"{peer} (HttpSensorTrigger)",
                f"{mean / peer:.2f} x",
            )
        )
        rows.append(
            Row(
                b,
                "status requests per poll interval of generation",
                f"{mean / (g / policy.poll_interval):.2f}",
                f"{peer / (g / policy.poll_interval):.2f}",
            )
        )
        rows.append(
            Row(
                b,
                f"completion noticed after, {g:.0f}-{g + policy.poll_interval:.0f} s generations "
                "(simulated mean, max)",
                f"{statistics.fmean(late):.1f} s, {max(late):.1f} s",
                f"{policy.poll_interval / 2:.1f} s, {policy.poll_interval:.1f} s",
            )
        )
        raw["lengths"][str(g)] = {"mean": mean, "min": min(polls), "max": max(polls), "peer": peer}
    for r in real:
        g = r["length"]
        polls = sims[str(g)]["polls"]
        low, high = sum_range(polls, r["tasks"])
        expected = statistics.fmean(polls) * r["tasks"]
        ok = low <= r["gets"] <= high and r["succeeded"] == r["tasks"]
        b = f"requests/video, {g:.0f} s generation"
        rows.append(
            Row(
                b,
                f"real run at 1/{scale:g} time, {r['tasks']} tasks: status requests (simulated)",
                f"{r['gets']} ({expected:.1f}, range {low}-{high})",
                "",
                f"{r['gets'] / expected:.2f} x",
                "inside the simulated range",
                verdict(ok),
            )
        )
        creates_ok = r["creates"] == r["tasks"] and r["create_requests"] == r["tasks"]
        rows.append(
            Row(
                b,
                "creates per task (real run; + lookups per task)",
                f"{r['creates'] / r['tasks']:.2f} (+ {r['lookups'] / r['tasks']:.2f})",
                "",
                "",
                "1",
                verdict(creates_ok),
            )
        )
        raw["lengths"][str(g)]["real"] = r
    notes = [
        f"Requests per video: operator defaults (first check {policy.first_poll_delay:g} s after submission, "
        f"then every {policy.poll_interval:g} s, expected_seconds {policy.expected_seconds} for a "
        f"{DURATION} s {MODE} clip), {SIMULATIONS} simulated waits per length; the peer "
        "(HttpSensorTrigger at the same interval) checks at once and then every interval. The real "
        "run submits each task as the operator does (one lookup by external id, then one create).",
    ]
    return BenchResult(rows, raw, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="scale 40, 5 tasks per length")
    parser.add_argument("--n", type=int, default=None, help="real tasks per length (10; quick 5)")
    parser.add_argument("--scale", type=float, default=None, help="real run time divisor (20; quick 40)")
    parser.add_argument("--lengths", type=float, nargs="+", default=list(LENGTHS), help="generation s")
    parser.add_argument("--json", type=Path, help="also write the rows and raw figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    scale = args.scale or (40.0 if args.quick else 20.0)
    result = run(args.lengths, scale, args.n or (5 if args.quick else 10))
    return result.report(args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
