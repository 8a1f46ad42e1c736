"""Entry point of ``make bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench import accuracy, report, step_time
from bench.models import ZOO

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description="qat-service benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a check in minutes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rounds = 10 if args.quick else 40
    results: dict = {"mode": "quick" if args.quick else "full", "environment": report.environment()}
    results["accuracy"] = accuracy.measure([0] if args.quick else [0, 1, 2])
    for row in results["accuracy"]:
        print(f"accuracy {row['model']}: fp32 {row['fp32_top1']:.4f} int8 {row['int8_top1']:.4f}", flush=True)
    results["step_time"] = []
    for spec in ZOO:
        row = step_time.measure(spec, rounds)
        results["step_time"].append(row)
        print(f"step time {spec.name}: {row['ratio_to_fp32']}", flush=True)
    json_path, md_path = report.write(results, args.out)
    print(md_path.read_text())
    print(f"results: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
