"""The results writer: what a person reads must say what was measured, errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import quality, report, service_throughput


def _runs() -> list[dict]:
    def run(fp32: float, ours: float) -> dict:
        return {
            quality.FP32: {"score": fp32, "sqnr_db": None, "agreement": None, "seconds": {"training": 1.0}},
            "ours QAT W8A8": {
                "score": ours,
                "sqnr_db": 30.0,
                "agreement": 0.99,
                "simulated_score": ours,
                "seconds": {"calibrating": 0.5, "training": 2.0, "exporting": 3.0},
            },
            "torch.ao FX QAT": {"error": "NotImplementedError: no ConvTranspose2d"},
        }

    return [run(0.90, 0.89), run(0.92, 0.90)]


def test_quality_rows_average_seeds_and_keep_the_spread_of_the_drop() -> None:
    task = quality.TASKS[0]
    rows = {row["variant"]: row for row in quality.summarise(task, _runs())}
    ours = rows["ours QAT W8A8"]
    assert ours["drop"] == pytest.approx(1.5) and ours["drop_spread"] == pytest.approx(1.0)
    assert ours["score"] == pytest.approx(0.895) and ours["seconds"]["exporting"] == 3.0
    assert rows[quality.FP32]["drop"] == 0 and rows[quality.FP32]["sqnr_db"] is None
    assert rows["torch.ao FX QAT"]["error"].startswith("NotImplementedError")


def test_the_markdown_names_machine_versions_date_and_every_part(tmp_path: Path) -> None:
    rows = quality.summarise(quality.TASKS[0], _runs())
    service = service_throughput.summarise(
        [
            {
                "id": "j1",
                "state": "SUCCEEDED",
                "failure": None,
                "created_at": "2026-01-01T00:00:00+00:00",
                "started_at": "2026-01-01T00:00:04+00:00",
                "finished_at": "2026-01-01T00:00:10+00:00",
                "metrics": {
                    "timings_s": {
                        "pipeline": 5.0,
                        "loading": 0.5,
                        "calibrating": 0.5,
                        "training": 1.0,
                        "exporting": 1.5,
                        "evaluating": 0.5,
                    }
                },
            }
        ],
        {"j1": "vision"},
        [0.010, 0.020, 0.030],
        [0.005],
    )
    assert service["queue_wait_s"]["vision"] == {"median": 4.0, "max": 4.0} and service["queue_wait_s"]["ads"] is None
    assert service["overhead_s"]["median_per_job"] == 2.5 and service["jobs_per_minute"] == 6.0
    service.update(submitted=3, unfinished_at_deadline=2)
    step = {
        "model": "m",
        "input_shape": [2, 3],
        "median_ms": {"fp32": 10.0, "ours": 12.0},
        "ratio_to_fp32": {"fp32": 1.0, "ours": 1.2},
        "saved_for_backward_mib": {"fp32": 1.0, "ours": 1.5},
    }
    results = {
        "mode": "quick",
        "wall_s": 12.5,
        "environment": report.environment(),
        "quality_budget": {
            "n_train": 10,
            "n_eval": 5,
            "fp32_epochs": 1,
            "qat_epochs": 1,
            "qat_lr": 1e-5,
            "batch_size": 50,
            "seeds": [0, 1],
        },
        "quality": rows,
        "step_time": [step],
        "service": {"summary": service},
        "service_cold": {"summary": {**service, "child_start_ahead": False, "jobs_per_minute": 4.5}},
        "job_start": [
            {
                "mode": "child started ahead",
                "jobs": 6,
                "worker_wall_s_median": 2.1,
                "child_startup_s_median": 0.3,
                "child_startup_s_max": 0.5,
            }
        ],
        "sandbox": [
            {"command": "python -c pass", "rounds": 5, "plain_ms": 32.3, "sandboxed_ms": 38.9, "added_ms": 6.6}
        ],
        "sentence_embeddings": [
            {
                "variant": "ours",
                "cosine_mean": 0.98857,
                "cosine_min": 0.98147,
                "retrieval_agreement": 1.0,
                "paraphrase_top1": 0.95,
                "seconds": 31.8,
            },
            {"variant": "PT2E", "error": "IndexError: list index out of range", "seconds": 2.0},
        ],
    }
    json_path, md_path = report.write(results, tmp_path)
    md = md_path.read_text()
    env = results["environment"]
    assert env["torch"] in md and env["torchao"] in md and env["date"] in md and f"{env['cpus']} CPUs" in md
    assert (
        "| digits CNN (sklearn digits 8x8) | ours QAT W8A8 | 89.50 % | 1.50 (1.00) | 30.0 | 0.9900 | 89.50 % | 2 |"
        in md
    )
    assert "| torch.ao FX QAT | failed: NotImplementedError: no ConvTranspose2d" in md
    assert "| digits CNN | ours QAT W8A8 | 0.50 | 2.00 | 3.00 |" in md
    assert "| m (2, 3) | 10.00 (1.00x), 1.0 | 12.00 (1.20x), 1.5 |" in md
    assert "| measure | child started ahead | child started per job |" in md
    assert "| jobs submitted / succeeded / unfinished at the deadline | 3 / 1 / 2 | 3 / 1 / 2 |" in md
    assert "| jobs per minute (2 workers) | 6.0 | 4.5 |" in md
    assert "| child started ahead | 6 | 2.1 s | 0.3 s (0.5 s) |" in md
    assert "| submit latency p50 / p99 | 20.0 / 29.8 ms |" in md and "vision 4.0 s (max 4.0), speech –" in md
    assert "median of 5 interleaved runs" in md and "| `python -c pass` | 32.3 | 38.9 | 6.6 |" in md
    assert "| ours | 0.9886 / 0.9815 | 1.000 | 0.950 | 31.8 |" in md
    assert "| PT2E | failed: IndexError: list index out of range | – | – | 2.0 |" in md
    assert json.loads(json_path.read_text())["quality"][1]["drop"] == pytest.approx(1.5)
