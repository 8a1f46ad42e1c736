"""quantlib: quantization-aware training with AMCT's config format and API.

``quantlib.config`` imports without torch (the API server validates configs with it),
so the torch-backed entry points here load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "create_quant_retrain_config",
    "create_quant_retrain_model",
    "restore_quant_retrain_model",
    "save_quant_retrain_model",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from quantlib import api

        return getattr(api, name)
    raise AttributeError(f"module 'quantlib' has no attribute {name!r}")
