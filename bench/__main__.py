"""Entry point of ``make bench``: quality, QAT speed, calibration/export time, service, sandbox start-up."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench import (
    api_under_load,
    dataset_memory,
    datasets,
    deploy_speed,
    job_start,
    quality,
    report,
    sandbox_startup,
    sentence_embeddings,
    service_throughput,
    step_time,
)
from bench.models import ZOO

RESULTS = Path(__file__).parent / "results"
PARTS = ("quality", "step_time", "deploy", "sentences", "memory", "service", "sandbox")


def main() -> None:
    parser = argparse.ArgumentParser(description="qat-service benchmarks")
    parser.add_argument("--quick", action="store_true", help="one seed, small samples, fewer rounds and jobs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=datasets.DEFAULT_CACHE, help="where the datasets are kept")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default because on a shared machine two OpenMP threads "
        "spinning against other processes run several times slower than one",
    )
    parser.add_argument("--only", choices=PARTS, action="append", help="run just these parts")
    parser.add_argument(
        "--task",
        choices=[task.name for task in quality.TASKS],
        action="append",
        help="quality: run just these tasks (all by default)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.only or PARTS)
    budget = quality.QUICK if args.quick else quality.FULL
    started = time.perf_counter()
    results: dict = {"mode": "quick" if args.quick else "full", "environment": report.environment()}
    if "quality" in parts:
        results["quality_budget"] = asdict(budget)
        results["quality"] = quality.measure(
            budget, args.cache, log=lambda line: print(line, flush=True), names=args.task
        )
        report.write(results, args.out)  # a later part failing keeps this one
    if "step_time" in parts:
        results["step_time"] = []
        for spec in ZOO:
            row = step_time.measure(spec, 10 if args.quick else 30)
            results["step_time"].append(row)
            print(
                f"step time {spec.name}: {row['ratio_to_fp32']} saved MiB {row['saved_for_backward_mib']}", flush=True
            )
        report.write(results, args.out)
    if "deploy" in parts:
        results["deploy_speed"] = deploy_speed.measure(args.quick, log=lambda line: print(line, flush=True))
        report.write(results, args.out)
    if "sentences" in parts:
        results["sentence_embeddings"] = sentence_embeddings.measure(
            args.quick, log=lambda line: print(line, flush=True)
        )
        report.write(results, args.out)
    if "memory" in parts:
        results["dataset_memory"] = dataset_memory.measure(args.quick, log=lambda line: print(line, flush=True))
        report.write(results, args.out)
    if "service" in parts:
        for key, start_ahead in (("service", True), ("service_cold", False)):
            results[key] = service_throughput.measure(
                jobs=8 if args.quick else 200, deadline_s=90 if args.quick else 840, start_ahead=start_ahead
            )
            print(f"{key}: {results[key]['summary']}", flush=True)
        results["job_start"] = job_start.measure(jobs=3 if args.quick else 6)
        print(f"job on an idle worker: {results['job_start']}", flush=True)
        results["api_under_load"] = api_under_load.measure(seconds=8 if args.quick else 30)
        print(f"API under load: {results['api_under_load']}", flush=True)
    if "sandbox" in parts:
        results["sandbox"] = sandbox_startup.measure(rounds=5 if args.quick else 15)
        print(f"sandbox start-up: {results['sandbox']}", flush=True)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    json_path, md_path = report.write(results, args.out)
    print(md_path.read_text())
    print(f"results: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
