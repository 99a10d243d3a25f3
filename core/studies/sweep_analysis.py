"""What a sweep's results say: which hyperparameters mattered (Optuna's importance evaluator), and which trials no
other beats on both accuracy and time per epoch (the Pareto front of the cost of a setting against its result)."""
from __future__ import annotations

from collections.abc import Sequence

MIN_TRIALS_FOR_IMPORTANCE = 4  # trials that ran to their end before importances mean anything


def param_importances(storage, sweep_id: str) -> dict[str, float]:
    """Each searched hyperparameter's share of the objective's variation (sums to 1), most important first, from
    the trials that ran to their end; {} until MIN_TRIALS_FOR_IMPORTANCE have or when they cannot say (one value
    tried). PED-ANOVA: Optuna's evaluator that needs no scikit-learn (fANOVA's random forest does)."""
    import optuna

    study = optuna.load_study(study_name=sweep_id, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. every trial tried the same values
        return {}
    return {name: float(share) for name, share in found.items()}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (seconds, accuracy) points that no other point beats on both (at most as slow and at least as
    accurate, better on one), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
