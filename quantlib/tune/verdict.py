"""The tuner's account of itself: each trial, the best one, and the verdict the seed's
workflow ends with ("target met", or not suitable for QAT)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from quantlib.spec import AccuracyTarget
from quantlib.tune.objective import Objective
from quantlib.tune.sensitivity import Sensitivity

TARGET_MET = "target met"


@dataclass(frozen=True)
class Trial:
    """One QAT run of the tuner, as ``report.json`` lists it."""

    index: int
    changes: list[str]
    drop: float
    metric_value: float
    float_layers: list[str]
    int4_layers: list[str]
    avg_weight_bits: float

    def fits(self, target: AccuracyTarget) -> bool:
        budget = target.weight_bits_budget
        return budget is None or self.avg_weight_bits <= budget + 1e-9

    def meets(self, target: AccuracyTarget) -> bool:
        return self.drop <= target.max_drop and self.fits(target)


def best_trial(trials: list[Trial], target: AccuracyTarget) -> Trial:
    """The first that meets the target, else the smallest drop within the budget, fewer
    layers in float breaking ties."""
    met = [t for t in trials if t.meets(target)]
    if met:
        return met[0]
    return min(trials, key=lambda t: (not t.fits(target), t.drop, len(t.float_layers), t.index))


def verdict(best: Trial, target: AccuracyTarget, objective: Objective) -> str:
    if best.meets(target):
        return TARGET_MET
    count = len(best.float_layers)
    layers = "layer" if count == 1 else "layers"
    budget = "" if best.fits(target) else f", over the budget of {target.weight_bits_budget} weight bits"
    return f"not suitable for QAT: best drop {objective.describe(best.drop)} with {count} {layers} in float{budget}"


def tuning_section(
    target: AccuracyTarget, objective: Objective, sensitivity: list[Sensitivity], trials: list[Trial]
) -> dict[str, Any]:
    """The ``tuning`` key of ``report.json`` (shape agreed with the report renderer)."""
    best = best_trial(trials, target)
    return {
        "target": target.model_dump(),
        "met": best.meets(target),
        "verdict": verdict(best, target, objective),
        "best_trial": best.index,
        "sensitivity": [entry.to_dict() for entry in sensitivity],
        "trials": [asdict(trial) for trial in trials],
    }
