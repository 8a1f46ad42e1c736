"""The tuning loop: QAT, and while the target is missed, one more config, at most
``max_trials`` runs; the best run is exported and reported as if it were the only one.

Trials are trained and scored in simulation only; export (the slow part on small
models) runs once, for the config that is kept. Each proposed config reaches
:func:`quantlib.train.train` as an object: no trial writes or reads a file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from quantlib.config import QuantConfig
from quantlib.data import Dataset
from quantlib.embedding import QuantEmbedding
from quantlib.layers import QuantLayer
from quantlib.loop import predict, tensors
from quantlib.outputs import OUTPUT_FILES
from quantlib.phases import Phase, Phases, ProgressFn
from quantlib.prepare import ModelLike
from quantlib.spec import AccuracyTarget, QATSpec
from quantlib.train import Report, Trained, finish, train, write_report
from quantlib.tune.edits import avg_weight_bits, float_layers, int4_layers
from quantlib.tune.objective import Objective
from quantlib.tune.plan import Planner
from quantlib.tune.sensitivity import Sensitivity, edge_layers, measure
from quantlib.tune.variants import Probe, Variant
from quantlib.tune.verdict import Trial, best_trial, tuning_section

PROBE_SAMPLES = 2048  # what-if passes run on at most this many eval samples


def run_tuned(
    model: ModelLike,
    dataset: Dataset,
    out: Path,
    config: QuantConfig,
    *,
    origin: str,
    spec: QATSpec,
    on_progress: ProgressFn | None,
) -> Report:
    """:func:`quantlib.run.run_qat` with ``spec.accuracy``: ``config`` (``origin`` says where
    it came from; ``out/config.json`` holds it) is the first trial; the same files in
    ``out``, from the best config found, and ``report.tuning`` saying how it was found."""
    return _Tuning(model, dataset, out, spec, on_progress).run(config, origin)


class _Tuning:
    def __init__(
        self, model: ModelLike, dataset: Dataset, out: Path, spec: QATSpec, on_progress: ProgressFn | None
    ) -> None:
        self.model, self.dataset, self.out, self.spec = model, dataset, out, spec
        self.target: AccuracyTarget = spec.accuracy or AccuracyTarget()
        self.on_progress = on_progress
        self.x_eval, self.y_eval, _ = dataset.eval_split()
        self.trials: list[Trial] = []
        self.kept: dict[int, tuple[Trained, dict[str, float]]] = {}

    def run(self, config: QuantConfig, origin: str) -> Report:
        phases = Phases(self.on_progress)
        trained = train(self.model, self.dataset, config, self.spec, phases)
        started = time.perf_counter()
        labels = self.y_eval if trained.task.labelled else None
        self.objective = Objective(self.target.metric, trained.fp32, labels, trained.task)
        self.params = _layer_params(trained.qat, trained.config)
        self._record(0, [f"QAT with {origin}"], trained, phases.timings)
        sensitivity: list[Sensitivity] = []
        if not self.trials[0].meets(self.target) and self.target.max_trials > 1:
            sensitivity = self._search(trained)
        best = best_trial(self.trials, self.target)
        trained, timings = self.kept[best.index]
        if best.index:  # trial 0's is there already: run_qat wrote it
            trained.config.write(self.out / OUTPUT_FILES["config"])
        final = Phases(self.on_progress)
        final.timings.update(timings)
        final.timings[Phase.TUNING] = round(time.perf_counter() - started, 3)
        report = finish(trained, self.dataset, self.out, self.spec, final)
        report.tuning = tuning_section(self.target, self.objective, sensitivity, self.trials)
        write_report(report)
        return report

    def _search(self, trained: Trained) -> list[Sensitivity]:
        if self.on_progress is not None:
            self.on_progress(Phase.TUNING, 0, self.target.max_trials, None, None)
        probe = self._probe(trained)
        sensitivity = measure(probe)
        sample = tensors(self.x_eval[:1], trained.device)
        planner = Planner(
            base=trained.config,
            target=self.target,
            objective=probe.objective,
            sensitivity=sensitivity,
            base_drop=probe.drop(Variant()),
            edges=edge_layers(trained.qat, sample),
            params=self.params,
        )
        for index in range(1, self.target.max_trials):
            proposal = planner.next(probe)
            if proposal is None:
                break
            phases = Phases(_as_trial(self.on_progress, index, self.target.max_trials))
            trained = train(self.model, self.dataset, proposal.config, self.spec, phases, first=False)
            self._record(index, proposal.changes, trained, phases.timings)
            if self.trials[-1].meets(self.target):
                break
            probe = self._probe(trained)
        return sensitivity

    def _probe(self, trained: Trained) -> Probe:
        return Probe(trained.qat, self.x_eval[:PROBE_SAMPLES], trained.device, self.objective.subset(PROBE_SAMPLES))

    def _record(self, index: int, changes: list[str], trained: Trained, timings: dict[str, float]) -> None:
        """Score the trial on all eval samples; keep its model only while it is the best."""
        outputs: np.ndarray = predict(trained.qat, self.x_eval, trained.device)
        config = trained.config
        self.trials.append(
            Trial(
                index=index,
                changes=changes,
                drop=self.objective.drop(outputs),
                metric_value=self.objective.value(outputs),
                float_layers=float_layers(config),
                int4_layers=int4_layers(config),
                avg_weight_bits=round(avg_weight_bits(config, self.params), 4),
            )
        )
        self.kept[index] = (trained, dict(timings))
        best = best_trial(self.trials, self.target).index
        self.kept = {i: run for i, run in self.kept.items() if i == best}


def _layer_params(qat: nn.Module, config: QuantConfig) -> dict[str, int]:
    """Weights per config layer, quantized or not: what the weight-bits budget weighs."""
    params = {}
    for name in config.layers:
        module = qat.get_submodule(name)
        weight = (module.layer if isinstance(module, (QuantLayer, QuantEmbedding)) else module).weight
        params[name] = cast(torch.Tensor, weight).numel()  # config layers are SUPPORTED types: weight is a tensor
    return params


def _as_trial(on_progress: ProgressFn | None, index: int, total: int) -> ProgressFn | None:
    """A trial's inner phases shown as one: ``tuning``, trial ``index`` of ``total``, with its loss."""
    if on_progress is None:
        return None

    def forward(_phase: str, _step: int, _total: int, loss: float | None, epoch: int | None) -> None:
        on_progress(Phase.TUNING, index, total, loss, epoch)

    return forward
