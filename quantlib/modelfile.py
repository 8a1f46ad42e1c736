"""Opening a ``.pt2`` model file without letting it run code.

``torch.export.load`` unpickles payloads an archive marks ``use_pickle``, so a crafted
file executes code at load. With ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` set while loading,
torch refuses those payloads and ordinary ``.pt2`` files still load. Torch is imported
on use, so :class:`ModelError` costs nothing to import where no model is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from quantlib.errors import QuantlibError

if TYPE_CHECKING:
    import torch


class ModelError(QuantlibError):
    """A model file that cannot be used; ``field`` is ``model``."""

    default_code = "BAD_MODEL"
    default_field = "model"


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def load_exported_program(path: str | os.PathLike[str]) -> torch.export.ExportedProgram:
    """The ExportedProgram in ``path``; anything else raises :class:`ModelError`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with _weights_only_loads():
            program = torch.export.load(path)
    except Exception as exc:  # torch raises many types for a bad archive; all mean the same here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path.name} is not a loadable torch.export program ({reason}); save one with "
            "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')"
        ) from exc
    return program
