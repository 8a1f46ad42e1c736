"""The deploy-speed benchmark on its smallest model: every variant timed, scored and its kernels read."""

from __future__ import annotations

from bench import report
from bench.deploy_models import DEPLOY_ZOO
from bench.deploy_speed import VARIANTS, measure_model


def test_mlp_rows_have_latency_scores_and_kernels() -> None:
    (mlp,) = [spec for spec in DEPLOY_ZOO if spec.name.startswith("MLP")]
    rows = {row["variant"]: row for row in measure_model(mlp, repeats=1)}
    assert list(rows) == list(VARIANTS)
    assert rows["FP32"]["latency_vs_fp32"] == [1.0, 1.0] and rows["FP32"]["integer_ops"] == 0
    for name in VARIANTS[1:]:
        row = rows[name]
        assert row["sqnr_db"] > 25 and row["agreement"] > 0.9, row
        assert row["integer_ops"] == 3 and row["float_compute_ops"] == 0, row["ops"]  # three QGemm
        assert row["bytes"] < rows["FP32"]["bytes"] / 3  # int8 weights
        faithful = row["deploy_vs_simulated_db"]
        assert (faithful is None) == name.startswith("quantize_static") and (faithful is None or faithful >= 40), row
    table = report.deploy_speed_table(list(rows.values()))
    assert table.count("\n") == 2 + len(VARIANTS) and "quantize_static QOperator" in table
