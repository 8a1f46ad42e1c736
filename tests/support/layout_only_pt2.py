"""A ``.pt2`` the API accepts without torch: torch.export's layout, a graph stub, raw weight bytes.

For service tests that never run a worker (uploads, limits, faults): the API checks the
archive's layout and payload configs, not the graph, so this passes submission.
"""

from __future__ import annotations

import io
import json
import os
import zipfile


def layout_only_pt2(weight_bytes: int = 0) -> bytes:
    """An archive with one stored weight of ``weight_bytes`` random bytes (none when 0)."""
    config = {"config": {}}
    model = io.BytesIO()
    with zipfile.ZipFile(model, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/archive_format", "pt2")
        archive.writestr("archive/models/model.json", "{}")
        if weight_bytes:
            config["config"]["w"] = {"path_name": "weight_0", "use_pickle": False, "tensor_meta": {}}
            archive.writestr("archive/data/weights/weight_0", os.urandom(weight_bytes))
        archive.writestr("archive/data/weights/model_weights_config.json", json.dumps(config))
    return model.getvalue()
