"""The files a run leaves in its output folder, by the key ``report.json`` lists each under.

One table for ``qat quantize`` and the service alike: the service publishes these names
as they are (:mod:`service.contract` re-exports the table), so a user finds the same file
under the same name either way. Standard library only: the torch-free contract imports it.
AMCT's own call, ``save_quant_retrain_model``, keeps AMCT's ``{save_path}_deploy_model.onnx``.
"""

from __future__ import annotations

OUTPUT_FILES: dict[str, str] = {
    "deploy_model": "model_int8.onnx",
    "fake_quant_model": "model_fake_quant.onnx",
    "record": "record.txt",
    "record_json": "record.json",
    "config": "config.json",
    "report": "report.json",
    "report_html": "report.html",
}
