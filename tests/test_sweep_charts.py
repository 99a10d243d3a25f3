"""The Sweep page's pure parts: figures and the results table from a sweep's snapshot, the Pareto front against a
brute-force reference, and Optuna's importance evaluator on a real study."""
from __future__ import annotations

import itertools
import math
import random

import optuna
import pytest

from core.config import RunStatus
from core.engine.train import EpochResult
from core.studies.sweep_analysis import MIN_TRIALS_FOR_IMPORTANCE, param_importances, pareto_front
from core.studies.sweep_state import SweepSnapshot, TrialSnapshot, default_spec
from dashboard import sweep_charts as charts

SPEC = default_spec(trials=6, epochs=3)


def epochs(accs, seconds=0.5, device="CPU: Test CPU (2 cores)"):
    return tuple(EpochResult(epoch=i + 1, phase=0, lr=0.1, train_loss=0.5, val_loss=0.4, val_acc=a, seconds=seconds,
                             samples_per_s=1e5, warmup=i == 0, elapsed=(i + 1) * seconds, device=device)
                 for i, a in enumerate(accs))


PARAMS = {"hidden": 64, "layers": 2, "lr": 0.1, "batch_size": 128, "optimizer": "sgd"}
TRIALS = (
    TrialSnapshot(0, {**PARAMS, "hidden": 32}, RunStatus.FINISHED, "r0", epochs([0.90, 0.93, 0.95], 0.2), 3,
                  seconds=1.0),
    TrialSnapshot(1, {**PARAMS, "hidden": 512, "optimizer": "adam"}, RunStatus.FINISHED, "r1",
                  epochs([0.95, 0.97, 0.975], 1.0), 3, seconds=3.5),
    TrialSnapshot(2, {**PARAMS, "lr": 0.003}, RunStatus.PRUNED, "r2", epochs([0.6], 0.3), 3, seconds=0.6),
    TrialSnapshot(3, {**PARAMS, "hidden": 128}, RunStatus.RUNNING, "r3", epochs([0.91], 0.4), 3),
)
SNAP = SweepSnapshot("s1", SPEC, RunStatus.RUNNING, trials=TRIALS)


def test_the_pareto_front_matches_a_brute_force_reference():
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.choice([0.1, 0.2, 0.5, 1.0]), rng.choice([0.8, 0.9, 0.95])) for _ in range(rng.randint(0, 8))]
        dominated = {i for i, j in itertools.permutations(range(len(points)), 2)
                     if points[j][0] <= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]}
        expected = {i for i in range(len(points)) if i not in dominated}
        front = pareto_front(points)
        # ties: of equal points one stands for all
        assert {points[i] for i in front} == {points[i] for i in expected}
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_trial_curves_draw_one_trace_per_trial_the_best_bold_and_the_pruned_grey():
    fig = charts.trial_curves_figure(SNAP)
    assert [t.name for t in fig.data] == ["trial 0", "trial 1", "trial 2", "trial 3"]
    assert list(fig.data[1].y) == pytest.approx([95, 97, 97.5])
    assert fig.data[1].line.color == charts.BEST_COLOR and fig.data[1].line.width > fig.data[0].line.width
    assert fig.data[2].line.color == charts.PRUNED_COLOR and fig.data[3].line.color == charts.RUNNING_COLOR
    assert "hidden 512" in fig.data[1].hovertemplate and "adam" in fig.data[1].hovertemplate


def test_the_results_table_puts_the_best_first_with_cost_and_searched_settings():
    frame = charts.results_frame(SNAP)
    assert frame["trial"].tolist() == [1, 0, 3, 2]
    assert frame.loc[0, "best val acc (%)"] == 97.5 and frame.loc[0, "best epoch"] == 3
    assert frame.loc[0, "s / epoch"] == 1.0 and frame.loc[0, "device"] == "cpu" and frame.loc[0, "run"] == "r1"
    assert {"hidden", "layers", "lr", "batch_size", "optimizer"} <= set(frame.columns)
    assert charts.results_frame(SweepSnapshot("s2", SPEC, RunStatus.QUEUED)).empty


def test_the_cost_view_marks_the_pareto_front_per_device():
    gpu = TrialSnapshot(4, PARAMS, RunStatus.FINISHED, "r4", epochs([0.96], 0.05, device="CUDA: Test GPU"), 1,
                        seconds=0.2)
    fig = charts.cost_figure(SweepSnapshot("s1", SPEC, RunStatus.RUNNING, trials=TRIALS + (gpu,)))
    front = fig.data[0]
    assert front.name == "Pareto front"
    assert list(front.x) == [0.05, 1.0] and list(front.y) == pytest.approx([96, 97.5])  # the GPU trial, then trial 1
    assert [t.name for t in fig.data[1:]] == ["cpu", "cuda"] and fig.layout.showlegend
    assert fig.layout.xaxis.type == "log"


def test_parallel_coordinates_use_log_axes_for_log_ranges_and_labels_for_choices():
    fig = charts.parallel_coordinates_figure(SNAP)
    dims = {d.label: d for d in fig.data[0].dimensions}
    hidden = dims["hidden (log)"]
    assert list(hidden.values) == pytest.approx([math.log10(32), math.log10(512), math.log10(64), math.log10(128)])
    assert hidden.range == pytest.approx((math.log10(16), math.log10(1024)))
    assert "100" in hidden.ticktext and len(hidden.tickvals) == len(hidden.ticktext)
    optimizer = dims["optimizer"]
    assert list(optimizer.ticktext) == ["sgd", "adam"] and list(optimizer.values) == [0, 1, 0, 0]
    assert list(dims["layers"].tickvals) == [1, 2, 3]
    assert list(dims["best val acc (%)"].values) == pytest.approx([95, 97.5, 60, 91])


def test_importance_needs_enough_finished_trials_and_finds_the_setting_that_matters(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s1", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    objective = lambda t: -t.suggest_float("lr", -3, 3) ** 2 + 0.001 * t.suggest_int("layers", 1, 3)  # noqa: E731
    study.optimize(objective, n_trials=MIN_TRIALS_FOR_IMPORTANCE - 1)
    assert param_importances(storage, "s1") == {}
    study.optimize(objective, n_trials=20)
    found = param_importances(storage, "s1")
    assert list(found) == ["lr", "layers"] and sum(found.values()) == pytest.approx(1) and found["lr"] > 0.8
    fig = charts.importance_figure(found)
    assert list(fig.data[0].y) == ["layers", "lr"]  # most important drawn on top
