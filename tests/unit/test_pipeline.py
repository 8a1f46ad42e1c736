"""quantlib's pipeline in memory: which module calls which, what a run reads and writes.

``run -> tune -> train``, never back, and none of them goes through the AMCT file
facade (``quantlib.api``); the config is read once and travels as an object, so a tuned
run writes no config for a trial to read back; the files a run leaves carry the names
the service publishes.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quantlib import api
from quantlib.caveats import output_caveats, run_caveats
from quantlib.data import Dataset, validate_arrays
from quantlib.errors import NoQuantizableLayers
from quantlib.outputs import OUTPUT_FILES
from quantlib.run import run_qat
from quantlib.spec import QATSpec
from service.contract import Metrics

AMCT_CALLS = {
    "create_quant_retrain_config",
    "create_quant_retrain_model",
    "restore_quant_retrain_model",
    "save_quant_retrain_model",
}


def _python(code: str, *args: object) -> str:
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _tiny() -> tuple[nn.Module, Dataset]:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    return model, validate_arrays({"x_train": x, "y_train": rng.integers(0, 4, 64)})


def test_train_imports_neither_the_tuner_nor_run_nor_the_amct_facade() -> None:
    loaded = json.loads(
        _python(
            """
            import json, sys
            import quantlib.train
            after_train = sorted(sys.modules)
            import quantlib.run
            print(json.dumps({"train": after_train, "run": sorted(sys.modules)}))
            """
        )
    )
    assert not [m for m in loaded["train"] if m.startswith(("quantlib.tune", "quantlib.run", "quantlib.api"))]
    assert "quantlib.tune" in loaded["run"] and "quantlib.api" not in loaded["run"]


def test_the_amct_module_holds_only_the_four_calls() -> None:
    own = {name for name, value in vars(api).items() if inspect.isfunction(value) and value.__module__ == api.__name__}
    assert own == AMCT_CALLS


def test_a_run_leaves_the_published_file_names(tmp_path: Path) -> None:
    model, dataset = _tiny()
    report = run_qat(model, dataset, tmp_path, spec=QATSpec(epochs=0))
    assert {key: path.name for key, path in report.files.items()} == OUTPUT_FILES
    assert {path.name for path in tmp_path.iterdir()} == set(OUTPUT_FILES.values())
    saved = json.loads((tmp_path / OUTPUT_FILES["report"]).read_text())
    assert saved["files"] == OUTPUT_FILES
    # the job row's metrics are read from it by the contract's model, "inf" included
    assert Metrics.model_validate(saved).accuracy["fp32"].sqnr_db == float("inf")


def test_a_tuned_run_reads_the_config_once_and_writes_no_trial_config(tmp_path: Path) -> None:
    """Every file opened under ``tmp_path`` during a tuned run of two trials, seen by an audit hook
    (in a child process: a hook cannot be removed)."""
    model, dataset = _tiny()
    torch.save(model, tmp_path / "model.pt")
    np.savez(tmp_path / "data.npz", x_train=dataset.x_train.arrays[""], y_train=dataset.y_train)
    config = tmp_path / "given.json"
    config.write_text(json.dumps({"version": 1, "0": {}, "2": {}}, indent=1))
    out = tmp_path / "out"
    opened = json.loads(
        _python(
            """
            import json, os, sys
            from pathlib import Path
            import numpy as np, torch
            from quantlib.data import validate_arrays
            from quantlib.run import run_qat
            from quantlib.spec import AccuracyTarget, QATSpec

            root, out, config = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
            model = torch.load(root / "model.pt", weights_only=False)
            dataset = validate_arrays(dict(np.load(root / "data.npz")))
            opened = []

            def audit(event, args):
                if event == "open" and isinstance(args[0], (str, os.PathLike)):
                    path, mode, flags = os.fspath(args[0]), args[1], args[2]
                    if path.startswith(str(root)):
                        writes = any(c in mode for c in "wax+") if mode else flags & (os.O_WRONLY | os.O_RDWR)
                        opened.append([path, bool(writes)])

            sys.addaudithook(audit)
            target = AccuracyTarget(metric="sqnr", max_drop=0.0, max_trials=2)
            report = run_qat(model, dataset, out, config_file=config, spec=QATSpec(epochs=1, accuracy=target))
            print(json.dumps({"opened": opened, "trials": len(report.tuning["trials"])}))
            """,
            tmp_path,
            out,
            config,
        )
    )
    assert opened["trials"] == 2, "the second trial must run, or the test proves nothing"
    written = {Path(path) for path, writes in opened["opened"] if writes}
    assert written <= {out / name for name in OUTPUT_FILES.values()}, "only the published files, no trial configs"
    json_reads = sorted(path for path, writes in opened["opened"] if not writes and path.endswith(".json"))
    # the given config: parsed once, then copied as written; config.json: only the page, which embeds it
    assert json_reads == sorted([str(config), str(config), str(out / OUTPUT_FILES["config"])])


class _Projection(nn.Module):
    """A projection of its own (as transformers' Conv1D): a weight and a matmul, no supported layer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_a_model_with_nothing_to_quantize_is_refused_before_training(tmp_path: Path) -> None:
    """Fine-tuning it would pass FP32 off as INT8: the run says what it found instead. As a program,
    its hand-written projections (``x @ self.weight``) are layers like any Linear."""
    model = nn.Sequential(_Projection(8, 16), nn.LayerNorm(16), _Projection(16, 4)).eval()
    dataset = validate_arrays({"x_train": np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)})
    with pytest.raises(
        NoQuantizableLayers, match=r"no layer that can be quantized .*its layers are _Projection x2, LayerNorm x1"
    ) as refused:
        run_qat(model, dataset, tmp_path, spec=QATSpec(epochs=1))
    assert (refused.value.code, refused.value.field) == ("NO_QUANTIZABLE_LAYERS", "model")
    assert not (tmp_path / OUTPUT_FILES["report"]).exists()

    program = torch.export.export(model, (torch.randn(2, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    report = run_qat(program, dataset, tmp_path / "program", spec=QATSpec(epochs=1))
    assert set(report.layers) == {"0", "2"}
    assert report.deploy_vs_simulated.agreement == 1.0 and report.deploy_vs_simulated.sqnr_db > 40


def test_a_bare_layer_exported_as_the_whole_model_is_told_to_wrap_it(tmp_path: Path) -> None:
    """Its weight is the root module's ``weight``: there is no layer name a config could refer to."""
    batch = {0: torch.export.Dim("batch")}
    program = torch.export.export(nn.Linear(4, 2).eval(), (torch.randn(2, 4),), dynamic_shapes=(batch,))
    dataset = validate_arrays({"x_train": np.zeros((8, 4), np.float32)})
    with pytest.raises(NoQuantizableLayers, match=r"weights \(bias, weight\) belong to its root module") as refused:
        run_qat(program, dataset, tmp_path, spec=QATSpec(epochs=1))
    assert refused.value.field == "model" and "torch.nn.Sequential(layer)" in refused.value.message


def test_a_config_that_enables_no_layer_is_refused(tmp_path: Path) -> None:
    model, dataset = _tiny()
    config = tmp_path / "given.json"
    config.write_text(json.dumps({"version": 1, "batch_num": 1}))
    with pytest.raises(NoQuantizableLayers, match="enables no layer") as refused:
        run_qat(model, dataset, tmp_path / "out", config_file=config, spec=QATSpec(epochs=1))
    assert refused.value.field == "config"


def test_a_fine_tune_that_hurts_is_not_what_ships(tmp_path: Path) -> None:
    """A learning rate far too high for a label-free fine-tune: the calibrated state scores
    better, and that is the model exported and reported."""
    model, labelled = _tiny()
    dataset = validate_arrays({"x_train": labelled.x_train.arrays[""]})
    report = run_qat(model, dataset, tmp_path, spec=QATSpec(epochs=2, lr=0.05))
    selection = report.selection
    assert selection is not None and selection.metric == "sqnr_db"
    assert selection.kept == "calibrated" and selection.calibrated > selection.fine_tuned
    assert report.accuracy["int8_simulated"].sqnr_db == pytest.approx(selection.calibrated)
    assert json.loads((tmp_path / OUTPUT_FILES["report"]).read_text())["fine_tune"]["kept"] == "calibrated"


def test_a_fine_tune_that_helps_ships(tmp_path: Path) -> None:
    """Trained on the labels it is scored by (there is no x_eval): fine-tuning gains top-1 and is kept."""
    model, dataset = _tiny()
    report = run_qat(model, dataset, tmp_path, spec=QATSpec(epochs=5, lr=1e-2))
    selection = report.selection
    assert selection is not None and selection.metric == "top1"
    assert selection.kept == "fine-tuned" and selection.fine_tuned > selection.calibrated
    assert report.accuracy["int8_simulated"].top1 == pytest.approx(selection.fine_tuned)


def test_outputs_of_nothing_are_called_out_beside_the_scores(tmp_path: Path) -> None:
    """FP32 outputs of ~1e-10 (as a random MobileNetV2's with default BatchNorm statistics): the
    SQNR then measures rounding, and the report, report.json and the page say so."""
    model, dataset = _tiny()
    with torch.no_grad():
        model[2].weight.mul_(1e-10)
        model[2].bias.zero_()
    report = run_qat(model, dataset, tmp_path, spec=QATSpec(epochs=0))
    assert "outputs are at most" in report.caveats[0]
    assert json.loads((tmp_path / OUTPUT_FILES["report"]).read_text())["caveats"] == report.caveats
    assert "Warning:</strong> the FP32 model" in (tmp_path / OUTPUT_FILES["report_html"]).read_text()


def test_a_constant_model_is_called_out_and_a_sound_one_is_not() -> None:
    assert "same output" in output_caveats(np.ones((8, 3), dtype=np.float32))[0]
    assert output_caveats(np.random.default_rng(0).standard_normal((8, 3))) == []


def test_few_eval_samples_and_labels_at_chance_are_called_out() -> None:
    fp32 = np.random.default_rng(0).standard_normal((64, 10))
    labels = np.argmax(fp32, axis=1)
    assert run_caveats(fp32, labels, "x_eval") == []
    (shifted,) = run_caveats(fp32, (labels + 1) % 10, "x_eval")  # labels in another class order
    assert "top-1 on these labels is 0.000, about chance (0.100 for 10 outputs)" in shifted
    (few,) = run_caveats(fp32[:8], labels[:8], "x_train")
    assert "only 8 samples of x_train" in few and "12 points" in few
