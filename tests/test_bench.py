"""`python -m core bench`: threads it used, and other processes' CPU per measured part, flagged when it distorts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.studies.bench import distortion_notes

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ROW = {"speedup": 10.6, "resident_over_floor": 3.8}


def test_quiet_parts_give_no_warning():
    assert distortion_notes({**ROW, "other_cpu_share": {"gemm": 0.02, "tutorial": 0.1, "resident": 0.05}}) == []
    assert distortion_notes({**ROW, "other_cpu_share": {"gemm": None, "tutorial": None, "resident": None}}) == []


def test_a_contended_pipeline_flags_the_ratio_it_distorts():
    notes = distortion_notes({**ROW, "other_cpu_share": {"gemm": 0.0, "tutorial": 0.05, "resident": 0.55}})
    text = " ".join(notes)
    assert "55%" in text and "the resident pipeline" in text
    assert "10.6x tutorial/resident ratio is distorted" in text and "3.8x FLOP-floor ratio is distorted" in text
    only_gemm = " ".join(distortion_notes({**ROW, "other_cpu_share": {"gemm": 0.6, "tutorial": 0.0, "resident": 0.0}}))
    assert "FLOP-floor" in only_gemm and "tutorial/resident" not in only_gemm


def _bench(tmp_path, env_extra=None):
    (tmp_path / "data").mkdir(exist_ok=True)  # empty: the 5,000-digit sample
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "TRAIN_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "core", "bench", "--tutorial-epochs", "2"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_bench_reports_its_threads_and_others_cpu_per_part(tmp_path):
    result = _bench(tmp_path)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)[0]
    assert row["threads"] == 1 and "1 CPU threads" in result.stderr
    if row["other_cpu_share"]["gemm"] is None:
        pytest.skip("no /proc here")
    assert set(row["other_cpu_share"]) == {"gemm", "tutorial", "resident"}
    assert all(0 <= share for share in row["other_cpu_share"].values())
    assert "others' CPU while timed: gemm" in result.stderr
    assert row["distorted"] == distortion_notes(row)


def test_bench_under_load_says_its_ratio_is_distorted(tmp_path):
    """A process spinning on a core for the whole bench: on any machine up to 3 cores that is over 30 %."""
    if (os.cpu_count() or 1) > 3:
        pytest.skip("one spinning process is under the flag's share on this many cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = _bench(tmp_path)
    finally:
        spinner.kill()
        spinner.wait()
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)[0]
    if row["other_cpu_share"]["resident"] is None:
        pytest.skip("no /proc here")
    assert row["other_cpu_share"]["resident"] > 0.3
    assert "tutorial/resident ratio is distorted" in result.stderr
