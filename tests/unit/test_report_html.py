"""report.html: the renderer on hand-made reports, then a real run_qat report in headless chromium."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

from quantlib.data import validate_arrays
from quantlib.examples.digits import DigitsNet, digits_dataset, export_program, train_fp32
from quantlib.report import render_report, write_report_html
from quantlib.run import run_qat
from quantlib.spec import QATSpec
from support.headless import WINDOW, blank_screenshot, dump_dom, png_size, screenshot

HOSTILE = "<script>alert('layer')</script>"


def layer(observed_max: float, clip_max: float, *, weight_rel_mse: float = 2e-5, dst: str = "INT8") -> dict[str, Any]:
    return {
        "observed_min": 0.0,
        "observed_max": observed_max,
        "clip_min": 0.0,
        "clip_max": clip_max,
        "clip_min_learned": False,
        "clip_max_learned": True,
        "fixed_min": True,
        "data_dst_type": dst,
        "weight_dst_type": dst,
        "channel_wise": True,
        "weight_rel_mse": weight_rel_mse,
        "folded_bn": None,
    }


def scores(top1: float | None, agreement: float, sqnr: float | str) -> dict[str, Any]:
    return {"top1": top1, "agreement": agreement, "sqnr_db": sqnr}


@pytest.fixture
def report() -> dict[str, Any]:
    """report.json's shape as run_qat writes it (JSON's "inf" included)."""
    return {
        "files": {"config": "config.json", "report": "report.json", "report_html": "report.html"},
        "accuracy": {
            "fp32": scores(0.9511, 1.0, "inf"),
            "int8_simulated": scores(0.9489, 0.9911, 27.23),
            "int8_onnxruntime": scores(0.9467, 0.9900, 25.97),
        },
        "deploy_vs_simulated": scores(None, 1.0, 31.93),
        "layers": {"stem.0": layer(1.85, 2.35, weight_rel_mse=1.2e-5), "fc": layer(3.46, 3.46, weight_rel_mse=0.0)},
        "loss": {"kind": "ce", "epoch_means": [0.4559]},
        "timings_s": {"loading": 0.37, "training": 0.55, "exporting": 2.75},
        "dataset": {
            "train_samples": 1347,
            "eval_samples": 450,
            "eval_source": "x_eval",
            "inputs": {"x": {"dtype": "float32", "shape": [1, 8, 8]}},
            "labels": True,
        },
        "spec": {"epochs": 1, "optimizer": "adam"},
        "batch_num": 1,
    }


@pytest.fixture
def tuning() -> dict[str, Any]:
    """The tuner's ``tuning`` key, as the contract between tuner and report gives it."""
    trial = {"drop": 0.05, "metric_value": 0.90, "float_layers": [], "int4_layers": [], "avg_weight_bits": 8.0}
    return {
        "target": {"metric": "top1", "max_drop": 0.01, "max_trials": 5, "weight_bits_budget": None},
        "met": True,
        "verdict": "target met",
        "best_trial": 1,
        "sensitivity": [
            {"layer": "stem.0", "quantized_only_drop": 0.04, "float_only_drop": 0.035},
            {"layer": "fc", "quantized_only_drop": -0.002, "float_only_drop": 0.001},
        ],
        "trials": [
            {"index": 0, "changes": [], **trial},
            {
                **trial,
                "index": 1,
                "changes": ["left stem.0 in float (input layer)"],
                "drop": 0.004,
                "metric_value": 0.947,
                "float_layers": ["stem.0"],
            },
        ],
    }


class Tags(HTMLParser):
    """Counts opened and closed elements, so unbalanced markup shows as a mismatch."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect"}

    def __init__(self) -> None:
        super().__init__()
        self.opened: dict[str, int] = {}
        self.closed: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.opened[tag] = self.opened.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        self.closed[tag] = self.closed.get(tag, 0) + 1


def balanced(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    for tag, count in tags.opened.items():
        if tag not in {"meta", "line"}:
            assert tags.closed.get(tag, 0) == count, (tag, count, tags.closed.get(tag, 0))
    return tags


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', page)


def test_report_without_tuning_has_tables_charts_and_no_tuning_section(report: dict[str, Any]) -> None:
    page = render_report(report, json.dumps({"version": 1, "batch_num": 1}))
    assert section_ids(page) == ["accuracy", "layers", "config", "run"]
    tags = balanced(page)
    assert tags.opened["svg"] == 2  # activation ranges and weight error; sensitivity needs tuning
    assert "INT8 deploy (onnxruntime)" in page and "94.67" in page and "0.44</td>" in page  # the drop, in points
    assert "\u221e" in page  # FP32's SQNR against itself: "inf" in report.json
    assert "&quot;batch_num&quot;: 1" in page  # the config, pretty-printed and escaped


def test_report_with_tuning_shows_verdict_trials_and_sensitivity(
    report: dict[str, Any], tuning: dict[str, Any]
) -> None:
    page = render_report({**report, "tuning": tuning})
    assert section_ids(page) == ["accuracy", "tuning", "layers", "config", "run"]
    assert balanced(page).opened["svg"] == 3
    assert '<p class="verdict met">target met</p>' in page
    assert "left stem.0 in float (input layer)" in page and "the config as given" in page
    assert re.search(r'<tr class="best"><td>1 \(best\)</td>', page)
    assert "sensitivity per layer (top1 drop in points" in page
    assert "config.json was not found" in page

    missed = {**tuning, "met": False, "verdict": "not suitable for QAT: best drop 0.03 with 2 layers in float"}
    page = render_report({**report, "tuning": missed})
    assert '<p class="verdict missed">not suitable for QAT: best drop 0.03' in page


def test_user_text_is_escaped_everywhere(report: dict[str, Any], tuning: dict[str, Any]) -> None:
    hostile = copy.deepcopy(report)
    hostile["layers"][HOSTILE] = hostile["layers"].pop("fc") | {"folded_bn": HOSTILE}
    tuning["sensitivity"][1]["layer"] = HOSTILE
    tuning["trials"][1]["changes"] = [f"left {HOSTILE} in float"]
    tuning["trials"][1]["float_layers"] = [HOSTILE]
    hostile["tuning"] = tuning
    config = json.dumps({"version": 1, HOSTILE: {"retrain_enable": True}, "note": "</pre><script>x()</script>"})
    page = render_report(hostile, config)
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 7  # chart labels and tooltips, table, sensitivity, trial, config
    balanced(page)


def test_infinite_and_missing_numbers_render_as_signs_not_coordinates(
    report: dict[str, Any], tuning: dict[str, Any]
) -> None:
    report["accuracy"]["int8_onnxruntime"] = scores(None, 1.0, "inf")
    report["accuracy"]["int8_simulated"]["sqnr_db"] = "-inf"
    report["layers"]["fc"]["weight_rel_mse"] = "nan"
    tuning["target"]["metric"] = "sqnr"
    tuning["sensitivity"][0]["quantized_only_drop"] = "inf"
    page = render_report({**report, "tuning": tuning})
    assert "\u2212\u221e" in page and "\u221e dB" in page
    assert not re.search(r'="[^"]*(nan|inf)', page), "a non-finite number reached an SVG attribute"
    assert "sensitivity per layer (sqnr drop in noise/signal" in page


def test_page_is_self_contained(report: dict[str, Any], tuning: dict[str, Any]) -> None:
    page = render_report({**report, "tuning": tuning}, "{}").lower()
    for external in ("http://", "https://", "//cdn", "src=", "<link", "<script", "@import", "url("):
        assert external not in page, external


def test_write_report_html_reads_the_config_beside_it(report: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"version": 1, "batch_num": 3}', encoding="utf-8")
    path = write_report_html(report, tmp_path)
    assert path == tmp_path / "report.html"
    assert "&quot;batch_num&quot;: 3" in path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, short run_qat on the digits example: its out folder."""
    data = digits_dataset(0)
    torch.manual_seed(0)
    model = DigitsNet()
    train_fp32(model, data, epochs=1, seed=0)
    out = tmp_path_factory.mktemp("digits-report")
    run_qat(export_program(model), validate_arrays(data), out, spec=QATSpec(epochs=1))
    return out


def test_real_report_renders_in_headless_chromium(digits_run: Path, tmp_path: Path) -> None:
    report = json.loads((digits_run / "report.json").read_text(encoding="utf-8"))
    assert report["files"]["report_html"] == "report.html"
    page = digits_run / "report.html"

    dom = dump_dom(page)
    assert section_ids(dom) == ["accuracy", "speed", "layers", "config", "run"]
    assert dom.count("<svg") == 2 and dom.count("<rect") >= 2 * len(report["layers"])
    assert dom.count("<table") == 6  # accuracy, speed, layers, and the run's dataset, spec, time
    assert f"{report['speed']['size_ratio']:.2f}x FP32" in dom  # the headline card
    for name in report["layers"]:
        assert f"<code>{name}</code>" in dom
    assert "INT8 deploy (onnxruntime)" in dom and "retrain_weight_config" in dom

    png = screenshot(page, tmp_path / "report.png")
    assert png_size(png) == WINDOW
    blank = blank_screenshot(tmp_path)
    assert png_size(blank) == WINDOW
    # A blank window compresses to almost nothing; tables, text and charts do not.
    assert len(png) > 10 * len(blank), (len(png), len(blank))
