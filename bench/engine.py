"""Benchmark: the engine in-process, this checkout against another revision, side by side.

For work on the engine's batch path, where the ingest benchmark's consumer and
broker would drown a 10% change in noise. Without a consumer (batches handed to
`Engine.process_inbound` as the worker's transport hands them over), on one
embedded stack, with one model and one set of events for both sides:

- batches of 2,000 (a worker catching up): events/s and CPU per event;
- batches of 50 (what a worker sees at 5,000 events/s): the time per batch,
  which every priority decision in the batch waits.

The reference is the same measurement on REV, checked out in a temporary git
worktree and imported instead of this checkout. Each side encodes the same
records with its own PredictionEvent schema (when the schema changed between
the two, events of the other's version would take the decoder's slow path). Each measurement runs in a
fresh process on an emptied Redis; the two sides alternate, --rounds times, so
that the machine's noise falls on both; the figures are medians over rounds.
REV must have `Engine.process_inbound` and `Engine.preload_latest` (any
revision since 2026-11-23).

    python bench/engine.py [--against HEAD~1] [--rounds 5] [--events 40000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 10_000  # events before timing: kernels compiled, the model version past its first events
FIGURES = (("batches of 2,000", "events_per_s", "events/s", "higher"),
           ("batches of 2,000", "cpu_us_per_event", "CPU us/event", "lower"),
           ("batches of 50", "batch_p50_ms", "ms per batch, p50", "lower"),
           ("batches of 50", "batch_p90_ms", "ms per batch, p90", "lower"))


def measure(events_file: Path, n_large: int) -> dict:
    """In the child: time the engine of whichever whystream is importable; the events after
    the warm-up go n_large in batches of 2,000, the rest in batches of 50."""
    import numpy as np

    from whystream.config import Settings
    from whystream.streams import engine as engine_module
    try:  # the layout since the house issue (21)
        from whystream.kafka.messages import Inbound
        from whystream.streams.assembly import build_engine
        from whystream.wire.codecs import codec_for
    except ImportError:  # a revision before it
        from whystream.streams.codec import codec_for
        from whystream.streams.engine import Engine as build_engine
        from whystream.streams.validate import Inbound

    encode = codec_for("PredictionEvent").encode
    values = [encode(record) for record in pickle.loads(events_file.read_bytes())]
    engine = build_engine(Settings.load())
    engine.preload_latest()
    next_offset = 0

    def run(size: int, chunk: list[bytes]) -> dict:
        nonlocal next_offset
        per_batch = []
        cpu, wall = time.process_time(), time.perf_counter()
        for begin in range(0, len(chunk), size):
            batch = chunk[begin:begin + size]
            n = len(batch)  # four partitions, offsets in order within each
            inbound = Inbound(batch, np.arange(n) % 4, next_offset + np.arange(n) // 4, lambda i: None)
            next_offset += n
            started = time.perf_counter()
            engine.process_inbound(inbound)
            per_batch.append(time.perf_counter() - started)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"events_per_s": len(chunk) / wall, "cpu_us_per_event": cpu / len(chunk) * 1e6,
                "batch_p50_ms": statistics.median(per_batch) * 1e3,
                "batch_p90_ms": float(np.quantile(per_batch, 0.9)) * 1e3}

    run(2000, values[:WARM_UP])
    figures = {"batches of 2,000": run(2000, values[WARM_UP:WARM_UP + n_large]),
               "batches of 50": run(50, values[WARM_UP + n_large:])}
    engine.close()
    return {"imported_from": str(Path(engine_module.__file__).resolve().parents[1]), "figures": figures}


def revision_of(rev: str) -> str:
    """The short commit id of REV in this checkout's git repository, or exit saying why not."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"--against {rev!r} is not a revision of the git checkout at {ROOT} ({found.stderr.strip()})")
    return found.stdout.strip()


def checkout(rev: str, into: Path) -> Path:
    """A git worktree of REV and, beside it, a folder that imports as its `whystream`
    (the package maps folders as pyproject.toml's package-dir says)."""
    tree = into / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), rev],
                   check=True, capture_output=True)
    package_dir = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    path = into / "path"
    shutil.copytree(tree / package_dir["whystream"], path / "whystream")
    for name, folder in package_dir.items():
        if name != "whystream":
            (path / name.replace(".", "/")).symlink_to(tree / folder)
    return path


def remove_checkout(into: Path) -> None:
    """Remove the git worktree `checkout(rev, into)` made (nothing if there is none)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(into / "tree")], capture_output=True)


def run(args) -> dict:
    import redis

    from whystream.infra.stack import EmbeddedStack
    from whystream.jobs.simulation.generator import TransactionGenerator
    from whystream.jobs.simulation.produce import prediction_events
    from whystream.jobs.simulation.train import train_model
    from whystream.kafka.topics import ensure_topics
    from whystream.models.registry import ModelRegistry

    revision = revision_of(args.against)
    with tempfile.TemporaryDirectory(prefix="whystream-bench-engine-") as tmp:
        work = Path(tmp)
        stack = EmbeddedStack(work / "stack", write_env_file=False)
        base = stack.start()
        try:
            reference = checkout(revision, work / "reference")
            model = train_model(ModelRegistry(work / "registry"), n_train=20_000, num_trees=50, progress=False)
            events = work / "events.pickle"
            count = WARM_UP + args.events + args.events // 4
            records = [r for chunk in prediction_events(model, TransactionGenerator(1), 0, count,
                                                        f"engine{time.time_ns()}", 1) for r in chunk]
            events.write_bytes(pickle.dumps(records))
            admin = redis.Redis.from_url(base.redis_url)
            sides = {"reference": reference, "this checkout": None}
            rounds = []
            for k in range(args.rounds):
                figures = {}
                for side in (list(sides) if k % 2 == 0 else list(sides)[::-1]):
                    print(f"round {k + 1}/{args.rounds}: {side} ...", flush=True)
                    settings = base.with_(topic_prefix=f"e{k}{len(figures)}.", registry=work / "registry")
                    ensure_topics(settings, partitions=4)
                    admin.flushdb()  # no side finds the other's dedup marks or cached explanations
                    env = {**os.environ, **settings.as_env()}
                    if sides[side] is not None:
                        env["PYTHONPATH"] = str(sides[side])
                    child = subprocess.run([sys.executable, __file__, "--child", str(events), "--events",
                                            str(args.events)], env=env, capture_output=True, text=True)
                    if child.returncode != 0:
                        sys.stderr.write(child.stderr[-4000:])
                        raise SystemExit(f"{side} failed ({child.returncode})")
                    answer = json.loads(child.stdout.strip().splitlines()[-1])
                    if (sides[side] is not None) != answer["imported_from"].startswith(str(work)):
                        raise SystemExit(f"{side} imported the engine from {answer['imported_from']}")
                    figures[side] = answer["figures"]
                rounds.append(figures)
            admin.close()
        finally:
            stack.stop()
            remove_checkout(work / "reference")
    medians = {side: {part: {name: round(statistics.median(r[side][part][name] for r in rounds), 3)
                             for name in rounds[0][side][part]} for part in rounds[0][side]} for side in sides}
    return {"benchmark": "engine", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "against": revision, "events": args.events, "rounds": rounds, "median": medians}


def report(r: dict) -> str:
    ours, theirs = r["median"]["this checkout"], r["median"]["reference"]
    lines = [f"engine benchmark: this checkout against {r['against']}, in-process, {r['events']:,} events in "
             f"batches of 2,000 and {r['events'] // 4:,} in batches of 50, medians of {len(r['rounds'])} rounds ({r['machine']})",
             f"  {'':<18}{'figure':<20}{r['against']:>12}{'this':>12}   ratio (better > 1)"]
    for part, name, label, better in FIGURES:
        before, after = theirs[part][name], ours[part][name]
        ratio = after / before if better == "higher" else before / after
        lines.append(f"  {part:<18}{label:<20}{before:>12,.2f}{after:>12,.2f}   {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=40_000,
                        help="events timed in batches of 2,000; a quarter as many more go in batches of 50")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.events)))
        return {}
    from bench.results import publish
    result = run(args)
    publish(result, report(result), args.json)
    return result


if __name__ == "__main__":
    if "--child" not in sys.argv:  # a child imports whichever whystream its PYTHONPATH names
        sys.path.insert(0, str(ROOT))  # `python bench/engine.py`: find bench.*
    main()
