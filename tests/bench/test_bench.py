"""The benchmarks that no other test runs still run, as users start them, on tiny sizes.

Figures are not checked here (timings belong in `make bench`), only that each script
finishes and writes every figure it promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

ROOT = REPO
pytestmark = pytest.mark.integration


def _run(script: str, *args: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, f"bench/{script}", *args, "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text())


def test_store_benchmark_runs(tmp_path):
    result = _run("store.py", "--batches", "1", "--rounds", "1", out=tmp_path / "store.json")
    for way in ("copy_events", "locations"):
        assert result[way]["client_cpu_us_per_event"] > 0 and result[way]["redis_bytes_per_event"] > 0
    assert result["client_cpu_ratio"] > 0 and result["wall_ratio"] > 0


def test_engine_benchmark_compares_against_a_worktree_of_the_revision(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    result = _run("engine.py", "--against", "HEAD", "--rounds", "1", "--events", "2000", out=tmp_path / "engine.json")
    assert result["against"] == head
    for side in ("reference", "this checkout"):  # the script itself checks where each side imported from
        figures = result["median"][side]
        assert figures["batches of 2,000"]["events_per_s"] > 0 and figures["batches of 50"]["batch_p50_ms"] > 0
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "whystream-bench-engine-" not in worktrees  # removed again


def test_treeshap_benchmark_compares_against_a_worktree_of_the_revision(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    result = _run("treeshap.py", "--against", "HEAD", "--rounds", "1", "--models", "shallow",
                  out=tmp_path / "treeshap.json")
    assert result["against"] == head and len(result["rounds"]) == 1
    summary = result["summary"]["shallow"]  # the script itself checks where each side imported from
    for side in ("reference", "this checkout"):
        assert summary["rows_per_cpu_s"][side] > 0 and summary["single_row_p50_ms"][side] > 0
    assert summary["speed_ratio"]["min"] > 0 and summary["latency_ratio"]["median"] > 0
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "whystream-bench-treeshap-" not in worktrees  # removed again


def test_input_views_benchmark_runs(tmp_path):
    result = _run("input_views.py", "--batches", "2", "--per-batch", "200", "--repeat", "1",
                  out=tmp_path / "input_views.json")
    assert set(result["inserts"]) == {"all views", "without the input-drift views"}
    assert all(f["explanations_per_s"] > 0 for f in result["inserts"].values()) and result["insert_time_ratio"] > 0
    assert result["queries"]["input_drift"]["rows"] == 39 and result["queries"]["decision_drift"]["rows"] == 1


def test_sink_benchmark_runs(tmp_path):
    result = _run("sink.py", "--events", "2000", "--rounds", "1", out=tmp_path / "sink.json")
    assert all(result[way]["rows_per_s"] > 0 for way in ("main_path", "per_message", "columnar", "pipelined"))
    assert result["pipelined_vs_main_path"] > 0 and result["decode_only"]["ratio"] > 0


def test_drift_query_benchmark_runs(tmp_path):
    result = _run("drift_query.py", "--minutes", "90", "--features", "5", "--repeat", "1", out=tmp_path / "dq.json")
    assert result["explanations"] == 90 * 60 and result["attribution_hist_rows"] > 0
    assert all(q["rows"] > 0 and q["median_ms"] > 0 for q in result["queries"].values())
    assert result["features_over_psi_0.2_last_5m"] == ["f03"]  # the shifted feature, and only it


def test_decision_store_benchmark_runs(tmp_path):
    result = _run("decision_store.py", "--events", "2000", "--rounds", "1", out=tmp_path / "decision_store.json")
    assert result["explanations_rows_per_s"] > 0 and result["decisions_rows_per_s"] > 0
    assert 10 < result["bytes_per_decision"] < result["uncompressed_bytes_per_decision"]
    assert result["year_of_10M_a_day_GiB"] > 0 and result["sink_time_with_store_vs_without"] > 1
    assert all(q["median_ms"] > 0 and q["decisions_per_s"] > 0 for q in result["reads_over_every_decision"].values())
    assert set(result["reads_over_every_decision"]) == {"input_drift_all", "decision_drift_all"}


def test_ingest_benchmark_compares_the_worker_against_a_worktree_of_the_revision(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    result = _run("ingest.py", "--phases", "ingest", "--events", "3000", "--rounds", "1", "--against", "HEAD",
                  out=tmp_path / "ingest.json")
    assert result["against"] == head and len(result["rounds"]) == 1  # the script checks where REV imports from
    (round_,) = result["rounds"]
    for side in ("bare_faust", "worker", "reference"):
        assert round_[side]["events_per_s"] > 0 and round_[side]["cpu_us_per_event"] > 0
    assert result["ratio"] > 0 and result["cpu_ratio_against"] > 0
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "whystream-ingest-" not in worktrees  # removed again
