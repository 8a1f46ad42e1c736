"""A job arriving at an idle worker: its wall time with the child started ahead of it and without.

Two embedded deployments run side by side, one worker each, identical but for
``QAT_CHILD_START_AHEAD``. Their jobs alternate, one at a time, each after a pause that
lets the other deployment's next child finish its start-up, so neither job shares the
CPU with the other's work. Reported per mode: the median of the worker's wall time per
job (``started_at`` to ``finished_at``) and of the child's start-up (its ``pipeline`` time
minus loading and the compute phases). Run alone: ``python -m bench.job_start --jobs 6``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.api_latency import tiny_inputs
from bench.service_throughput import COMPUTE_PHASES, TERMINAL, _seconds
from workers.local_deployment import LocalDeployment, embedded_settings

MODES = {"child started ahead": "true", "child started per job": "false"}
PAUSE_S = 12.0


def measure(jobs: int, pause_s: float = PAUSE_S) -> list[dict[str, Any]]:
    """``jobs`` jobs per mode, alternating; one row per mode."""
    model, data = tiny_inputs()
    files = {"model": ("m.pt2", model), "data": ("d.npz", data), "spec": (None, '{"epochs": 1, "batch_size": 8}')}
    with tempfile.TemporaryDirectory() as tmp:
        pools = {}
        try:
            for index, (mode, flag) in enumerate(MODES.items()):
                root = Path(tmp) / f"pool-{index}"
                settings = {**embedded_settings(root, {}), "QAT_CHILD_START_AHEAD": flag}
                pools[mode] = LocalDeployment(root, settings, worker_name=f"start-{index}")
                pools[mode].start()
            tokens = {mode: pool.create_team("bench") for mode, pool in pools.items()}
            finished: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            time.sleep(pause_s)  # the first children start with their workers
            for _ in range(jobs):
                for mode, pool in pools.items():
                    finished[mode].append(_run_one(pool.url, tokens[mode], files))
                    time.sleep(pause_s)
        finally:
            for pool in pools.values():
                pool.stop()
    return [_row(mode, done) for mode, done in finished.items()]


def _run_one(url: str, token: str, files: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(f"{url}/v1/jobs", files=files, headers=headers, timeout=60)
    created.raise_for_status()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/jobs/{created.json()['id']}", headers=headers, timeout=60).json()
        if job["state"] in TERMINAL:
            if job["state"] != "SUCCEEDED":
                raise RuntimeError(f"bench job failed: {job['failure']}")
            return dict(job)
        time.sleep(0.2)
    raise RuntimeError("bench job did not finish within 300 s")


def _row(mode: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    walls, startups = [], []
    for job in jobs:
        timings = job["metrics"]["timings_s"]
        compute = sum(timings.get(phase, 0.0) for phase in COMPUTE_PHASES)
        walls.append(_seconds(job["started_at"], job["finished_at"]))
        startups.append(timings["pipeline"] - compute - timings.get("loading", 0.0))
    return {
        "mode": mode,
        "jobs": len(jobs),
        "worker_wall_s_median": round(statistics.median(walls), 2),
        "child_startup_s_median": round(statistics.median(startups), 2),
        "child_startup_s_max": round(max(startups), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="a job's wall time on an idle worker, child started ahead or not")
    parser.add_argument("--jobs", type=int, default=6)
    print(json.dumps(measure(parser.parse_args().jobs), indent=2))


if __name__ == "__main__":
    main()
