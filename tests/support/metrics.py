"""A succeeded job's metrics, for the tests that finish jobs by hand (as a worker would)."""

from __future__ import annotations

from service.contract import Accuracy, Loss, Metrics

METRICS = Metrics(
    accuracy={
        "fp32": Accuracy(top1=0.9, agreement=1.0, sqnr_db=float("inf")),
        "int8_simulated": Accuracy(top1=0.89, agreement=0.98, sqnr_db=31.5),
        "int8_onnxruntime": Accuracy(top1=0.89, agreement=0.98, sqnr_db=31.4),
    },
    deploy_vs_simulated=Accuracy(top1=None, agreement=1.0, sqnr_db=52.0),
    loss=Loss(kind="ce", epoch_means=[0.31]),
    timings_s={"training": 1.5},
)
