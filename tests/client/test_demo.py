"""``qat demo`` (what ``make demo`` runs), end to end with a small budget, as its own process."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from workers.local_deployment import QAT


def test_demo_quantizes_the_example_prints_the_table_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAT_")}
    run = subprocess.run(
        [QAT, "demo", "--root", tmp_path, "--example-epochs", "2", "--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    assert "embedded defaults" in out and "FP32 vs INT8" in out and "INT8 deploy (onnxruntime)" in out
    assert (tmp_path / "results" / "model_int8.onnx").stat().st_size > 0
    assert re.search(r"demo wall time: \d+\.\d s", out)
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", out)]
    assert len(pids) == 3
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
