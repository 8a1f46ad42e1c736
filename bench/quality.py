"""Quantization quality: every tool on the same FP32 checkpoint, data, budget and 50
calibration images, scored on what each one ships.

Per task and seed one FP32 model is trained; then our pipeline (``run_qat``: W8A8 QAT,
W4A8 QAT, calibration only) and the baselines (torch.ao FX, torchao PT2E, and
onnxruntime's ``quantize_static``, which does not train) each start from a copy of it.
The last three tasks are architectures nobody here wrote (transformers' ResNet, ViT and
GPT-2 blocks), trained briefly from random init. Every variant is scored on its deployed form: our ONNX model in
onnxruntime, torch.ao's converted fbgemm model, PT2E's converted Q/DQ graph, so a
simulation that the export does not reproduce cannot flatter anyone. Our simulated
(PyTorch) accuracy is kept alongside. The autoencoder has no classes: its score is the
PSNR of its reconstructions in dB.
"""

from __future__ import annotations

import functools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from bench import datasets
from bench.baselines import BASELINES, Baseline
from bench.models import AutoEncoder, Conv1dNet, MnistCNN, MobileNetish, RowsGPT2, TinyTransformer, hf_resnet, hf_vit
from bench.ort_static import quantize_static_session
from quantlib.data import validate_arrays
from quantlib.examples.digits import DigitsNet, digits_dataset
from quantlib.metrics import sqnr_db, top1_accuracy, top1_agreement
from quantlib.run import run_qat
from quantlib.spec import QATSpec, Target

CALIBRATION_IMAGES = 50
FP32 = "FP32"
# variant -> (simplified config, trains?, deploy target: INT4 weights deploy only with generic-qdq)
OURS: dict[str, tuple[dict[str, Any], bool, Target]] = {
    "ours QAT W8A8": ({}, True, "onnxruntime-cpu"),
    "ours QAT W4A8": ({"defaults": {"weight_dst_type": "INT4"}}, True, "generic-qdq"),
    "ours calibration only W8A8": ({}, False, "onnxruntime-cpu"),
}


@dataclass(frozen=True)
class Budget:
    """The same for every tool: images, epochs, learning rate, batch size."""

    n_train: int
    n_eval: int
    fp32_epochs: int
    qat_epochs: int
    seeds: tuple[int, ...]
    batch_size: int = CALIBRATION_IMAGES  # calibration is one batch of 50 images
    fp32_lr: float = 3e-3
    fp32_batch_size: int = 32
    qat_lr: float = QATSpec().lr

    @property
    def fp32(self) -> Schedule:
        return Schedule(self.fp32_epochs, self.fp32_lr, self.fp32_batch_size)

    @property
    def qat(self) -> Schedule:
        return Schedule(self.qat_epochs, self.qat_lr, self.batch_size)


class Schedule(NamedTuple):
    """One training run's length, learning rate and batch size."""

    epochs: int
    lr: float
    batch_size: int


FULL = Budget(n_train=1600, n_eval=800, fp32_epochs=4, qat_epochs=2, seeds=(0, 1, 2))
QUICK = Budget(n_train=400, n_eval=400, fp32_epochs=4, qat_epochs=1, seeds=(0,))


@dataclass(frozen=True)
class Task:
    """A zoo model on a real dataset; ``load`` returns arrays shaped for the model."""

    name: str
    dataset: str
    build: Callable[[], nn.Module]
    load: Callable[[Path, Budget, int], datasets.Split]
    classes: bool = True


def _digits(cache: Path, budget: Budget, seed: int) -> datasets.Split:
    data = digits_dataset(seed)
    return datasets.Split(data["x_train"], data["y_train"], data["x_eval"], data["y_eval"])


def _reshaped(
    load: Callable[..., datasets.Split], shape: Callable[[np.ndarray], np.ndarray]
) -> Callable[..., datasets.Split]:
    def loader(cache: Path, budget: Budget, seed: int) -> datasets.Split:
        s = load(cache, budget.n_train, budget.n_eval, seed)
        return datasets.Split(shape(s.x_train), s.y_train, shape(s.x_eval), s.y_eval)

    return loader


def _rgb32(x: np.ndarray) -> np.ndarray:
    """28x28 grey to 3x32x32: the input a MobileNet-style stem expects."""
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=float(x.min()))
    return np.ascontiguousarray(np.repeat(padded, 3, axis=1))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _rows(x: np.ndarray) -> np.ndarray:
    """1x28x28 grey to 28 tokens of 28 features: an image's rows as a sequence."""
    return np.ascontiguousarray(x[:, 0])


TASKS: tuple[Task, ...] = (
    Task("digits CNN", "sklearn digits 8x8", DigitsNet, _digits),
    Task("MNIST CNN", "MNIST", MnistCNN, _reshaped(datasets.mnist, _identity)),
    Task("Animal-MNIST CNN", "Animal-MNIST", MnistCNN, _reshaped(datasets.animal_mnist, _identity)),
    Task("MobileNet-style", "Animal-MNIST 3x32x32", MobileNetish, _reshaped(datasets.animal_mnist, _rgb32)),
    Task(
        "transformer-style",
        "Animal-MNIST rows as 28 tokens",
        lambda: TinyTransformer(features=28),
        _reshaped(datasets.animal_mnist, _rows),
    ),
    Task(
        "Conv1d",
        "MNIST columns as 28-channel signals",
        lambda: Conv1dNet(channels=28),
        _reshaped(datasets.mnist, lambda x: np.ascontiguousarray(x[:, 0])),
    ),
    Task(
        "ConvTranspose2d autoencoder",
        "MNIST reconstruction",
        AutoEncoder,
        _reshaped(datasets.mnist, _identity),
        classes=False,
    ),
    # architectures nobody here wrote: transformers' own definitions, trained briefly from random init
    Task("HF ResNet", "Animal-MNIST 3x32x32", hf_resnet, _reshaped(datasets.animal_mnist, _rgb32)),
    Task("HF ViT", "Animal-MNIST 3x32x32", hf_vit, _reshaped(datasets.animal_mnist, _rgb32)),
    Task("HF GPT-2", "Animal-MNIST rows as 28 tokens", RowsGPT2, _reshaped(datasets.animal_mnist, _rows)),
)
STATIC = "onnxruntime quantize_static (PTQ)"


def fit(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: Schedule,
    seed: int,
    mode: Callable[[nn.Module], None],
) -> None:
    """Adam with the lr decaying to 0 (cosine), shuffled batches, short last batch dropped:
    the schedule run_qat fine-tunes with, so the baselines get the same budget."""
    epochs, lr, batch_size = schedule
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = max(1, len(x) // batch_size) * epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    mode(model)
    for _ in range(epochs):
        batches = list(torch.randperm(len(x), generator=generator).split(batch_size))
        if len(batches) > 1 and len(batches[-1]) < batch_size:
            batches.pop()
        for idx in batches:
            value = loss(model(x[idx]), target[idx])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, batch: int = 250) -> np.ndarray:
    return torch.cat([model(torch.from_numpy(x[i : i + batch])).float() for i in range(0, len(x), batch)]).numpy()


def psnr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Peak signal-to-noise ratio of reconstructions, the peak being the inputs' range."""
    mse = float(np.mean((reference.astype(np.float64) - outputs) ** 2))
    peak = float(reference.max() - reference.min())
    return 10 * math.log10(peak**2 / mse) if mse > 0 else math.inf


def _score(task: Task, split: datasets.Split, fp32: np.ndarray, outputs: np.ndarray) -> dict[str, float | None]:
    """Top-1 (or reconstruction PSNR), SQNR against FP32 and top-1 agreement."""
    if task.classes:
        return {
            "score": top1_accuracy(outputs, split.y_eval),
            "sqnr_db": sqnr_db(fp32, outputs),
            "agreement": top1_agreement(fp32, outputs),
        }
    return {"score": psnr_db(split.x_eval, outputs), "sqnr_db": sqnr_db(fp32, outputs), "agreement": None}


def _export(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The FP32 model as a service upload: an ExportedProgram whose batch axis may vary."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def _ours(
    task: Task,
    split: datasets.Split,
    program: torch.export.ExportedProgram,
    fp32: np.ndarray,
    budget: Budget,
    seed: int,
) -> dict[str, dict[str, Any]]:
    arrays = {"x_train": split.x_train, "x_eval": split.x_eval}
    if task.classes:
        arrays.update(y_train=split.y_train, y_eval=split.y_eval)
    dataset = validate_arrays(arrays)
    results = {}
    for name, (simple, trains, target) in OURS.items():
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "simple.yaml"
            config.write_text(yaml.safe_dump({"batch_num": CALIBRATION_IMAGES // budget.batch_size, **simple}))
            spec = QATSpec(
                epochs=budget.qat_epochs if trains else 0,
                batch_size=budget.batch_size,
                lr=budget.qat_lr,
                seed=seed,
                target=target,
            )
            report = run_qat(program, dataset, Path(tmp) / "out", config_defination=config, spec=spec)
            session = ort.InferenceSession(str(report.files["deploy_model"]), providers=["CPUExecutionProvider"])
            deployed = predict(_onnx_runner(session), split.x_eval)
        simulated = report.accuracy["int8_simulated"]
        results[name] = {
            **_score(task, split, fp32, deployed),
            "simulated_score": simulated.top1 if task.classes else None,
            "simulated_sqnr_db": simulated.sqnr_db,
            "onnx_vs_simulated_agreement": report.deploy_vs_simulated.agreement,
            "seconds": report.timings_s,
        }
    return results


def _baseline(
    baseline: Baseline, task: Task, split: datasets.Split, model: nn.Module, fp32: np.ndarray, budget: Budget, seed: int
) -> dict[str, Any]:
    x = torch.from_numpy(split.x_train)
    target, loss = _targets(task, split, model)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(seed)
    prepared = baseline.prepare(model, (x[:2],))
    seconds["preparing"] = time.perf_counter() - start
    start = time.perf_counter()
    baseline.train(prepared)
    with torch.no_grad():
        prepared(x[:CALIBRATION_IMAGES])
    seconds["calibrating"] = time.perf_counter() - start
    start = time.perf_counter()
    fit(prepared, x, target, loss, budget.qat, seed, baseline.train)
    seconds["training"] = time.perf_counter() - start
    start = time.perf_counter()
    converted = baseline.convert(prepared)
    seconds["converting"] = time.perf_counter() - start
    return {
        **_score(task, split, fp32, predict(converted, split.x_eval)),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _quantize_static(task: Task, split: datasets.Split, model: nn.Module, fp32: np.ndarray) -> dict[str, Any]:
    """onnxruntime's PTQ on the FP32 export, calibrated on the 50 images the others calibrate on
    (its ``calibrating`` seconds cover the export and the quantization)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        session = quantize_static_session(model, {"x": split.x_train[:CALIBRATION_IMAGES]}, ("x",), Path(tmp))
        seconds = {"calibrating": round(time.perf_counter() - start, 3)}
        outputs = predict(_onnx_runner(session), split.x_eval)
    return {**_score(task, split, fp32, outputs), "seconds": seconds}


def _targets(task: Task, split: datasets.Split, model: nn.Module) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    """Fine-tuning targets as run_qat picks them: labels with cross-entropy, or, without
    labels, the FP32 model's outputs with MSE (distillation)."""
    if task.classes:
        return torch.from_numpy(split.y_train), F.cross_entropy
    return torch.from_numpy(predict(model.eval(), split.x_train)), F.mse_loss


def run_task(
    task: Task, budget: Budget, seed: int, cache: Path, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """Every variant of one task for one seed: variant -> scores."""
    split = task.load(cache, budget, seed)
    torch.manual_seed(seed)
    model = task.build()
    x = torch.from_numpy(split.x_train)
    target = torch.from_numpy(split.y_train) if task.classes else x
    loss = F.cross_entropy if task.classes else F.mse_loss
    start = time.perf_counter()
    fit(model, x, target, loss, budget.fp32, seed, nn.Module.train)
    model.eval()
    fp32 = predict(model, split.x_eval)
    reference = {"score": _score(task, split, fp32, fp32)["score"], "sqnr_db": None, "agreement": None}
    results: dict[str, dict[str, Any]] = {
        FP32: {**reference, "seconds": {"training": round(time.perf_counter() - start, 3)}}
    }
    results.update(_ours(task, split, _export(model, x[:2]), fp32, budget, seed))
    tools: dict[str, Callable[[], dict[str, Any]]] = {
        baseline.name: functools.partial(_baseline, baseline, task, split, model, fp32, budget, seed)
        for baseline in BASELINES
    }
    tools[STATIC] = functools.partial(_quantize_static, task, split, model, fp32)
    for name, run in tools.items():
        try:
            results[name] = run()
        except Exception as exc:  # noqa: BLE001 - a tool that cannot take a model is a result
            results[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"}
    for name, row in results.items():
        log(f"  {task.name} seed {seed} {name}: {row.get('score', row.get('error'))}")
    return results


def summarise(task: Task, runs: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per variant: means over seeds, the drop against FP32 and its spread."""
    rows = []
    for variant in runs[0]:
        ok = [run for run in runs if "error" in run[variant]] == []
        row: dict[str, Any] = {"task": task.name, "dataset": task.dataset, "variant": variant, "seeds": len(runs)}
        if not ok:
            row["error"] = next(run[variant]["error"] for run in runs if "error" in run[variant])
            rows.append(row)
            continue
        scale = 100 if task.classes else 1  # points of accuracy, or dB of PSNR
        drops = [scale * (run[FP32]["score"] - run[variant]["score"]) for run in runs]
        for key in ("score", "sqnr_db", "agreement", "simulated_score"):
            values = [run[variant].get(key) for run in runs]
            row[key] = statistics.mean(values) if None not in values else None
        row.update(
            metric="top-1" if task.classes else "PSNR dB",
            drop=statistics.mean(drops),
            drop_spread=max(drops) - min(drops),
            seconds={
                k: round(statistics.mean(run[variant]["seconds"][k] for run in runs), 3)
                for k in runs[0][variant]["seconds"]
            },
            runs=[run[variant] for run in runs],
        )
        rows.append(row)
    return rows


def measure(
    budget: Budget, cache: Path, log: Callable[[str], None] = print, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """Every task (or those ``names`` name) for every seed of ``budget``: one row per task and variant."""
    rows = []
    for task in [t for t in TASKS if names is None or t.name in names]:
        runs = [run_task(task, budget, seed, cache, log) for seed in budget.seeds]
        rows += summarise(task, runs)
    return rows


def _onnx_runner(session: ort.InferenceSession) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deployed model as a function of a batch, for :func:`predict`."""
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
