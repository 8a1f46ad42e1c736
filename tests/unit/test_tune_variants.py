"""The tuner's what-if passes change a trained QAT model only while they run.

Sensitivity and clip search toggle quantizers on the very model a trial trained, and
the best trial's model is the one exported: a probe that left anything changed would
ship a model that is not the one reported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from quantlib.config import QuantConfig, parse_config
from quantlib.inputs import Inputs
from quantlib.loop import predict, tensors
from quantlib.prepare import prepare, quant_layers
from quantlib.tune.edits import avg_weight_bits, float_layers, int4_layers, with_changes
from quantlib.tune.objective import Objective
from quantlib.tune.sensitivity import edge_layers, measure
from quantlib.tune.variants import Probe, Variant, applied

CPU = torch.device("cpu")


def _calibrated() -> tuple[nn.Module, nn.Module, QuantConfig, Inputs]:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    config = parse_config({"version": 1, "batch_num": 1, "0": {}, "2": {}, "4": {}})
    x = torch.randn(64, 16)
    qat = prepare(model, config, (x[:1],))
    qat.eval()(x)  # the first forward calibrates
    return model, qat, config, Inputs({"input": x.numpy()})


def test_variants_apply_inside_and_leave_the_model_as_it_was() -> None:
    model, qat, _, x = _calibrated()
    before = {k: v.clone() for k, v in qat.state_dict().items()}
    learned = {name: type(layer.act_quant.clip_max) for name, layer in quant_layers(qat)}
    quantized, fp32 = predict(qat, x, CPU), predict(model, x, CPU)

    with applied(qat, Variant(floats=frozenset({"0", "2", "4"}))):
        np.testing.assert_allclose(predict(qat, x, CPU), fp32, rtol=1e-6, atol=1e-6)
    variant = Variant(floats=frozenset({"0"}), clips={"2": (0.05, None)}, int4=frozenset({"4"}))
    with applied(qat, variant):
        assert not np.allclose(predict(qat, x, CPU), quantized)
        layers = dict(quant_layers(qat))
        assert layers["2"].act_quant.clip_max.item() == np.float32(0.05) and layers["4"].weight_quant.bits == 4

    np.testing.assert_array_equal(predict(qat, x, CPU), quantized)
    assert all(torch.equal(before[k], v) for k, v in qat.state_dict().items())
    assert {name: type(layer.act_quant.clip_max) for name, layer in quant_layers(qat)} == learned


def test_sensitivity_of_an_exact_model_and_its_edge_layers() -> None:
    _, qat, _, x = _calibrated()
    reference = predict(qat, x, CPU)
    with applied(qat, Variant(floats=frozenset({"0", "2", "4"}))):
        reference = predict(qat, x, CPU)
    probe = Probe(qat, x, CPU, Objective("sqnr", reference, None))
    entries = {entry.layer: entry for entry in measure(probe)}
    assert set(entries) == {"0", "2", "4"}
    everything = probe.drop(Variant())
    for entry in entries.values():
        # quantization noise: some with one layer quantized, less than with all but one, less than all
        assert 0 < entry.quantized_only_drop < everything and 0 < entry.float_only_drop < everything
        assert entry.int4_only_drop > 0
    assert edge_layers(qat, tensors(x[:1], CPU)) == {"0": "input layer", "4": "output layer"}


def test_config_edits_are_valid_configs_and_weigh_bits_by_parameters() -> None:
    _, qat, config, _ = _calibrated()
    params = {"0": 16 * 32, "2": 32 * 32, "4": 32 * 10}
    edited = with_changes(config, ["2"], {"0": (1.23456789, -0.5), "4": (2.0, None)}, ["0"])
    assert float_layers(edited) == ["2"] and int4_layers(edited) == ["0"]
    data = edited.layers["0"].retrain_data_config
    assert (data.clip_max, data.clip_min) == (1.23457, -0.5) and edited.layers["4"].retrain_data_config.clip_min is None
    assert avg_weight_bits(edited, params) == (512 * 4 + 1024 * 32 + 320 * 8) / (512 + 1024 + 320)
    assert parse_config(edited.to_file_dict()) == edited
