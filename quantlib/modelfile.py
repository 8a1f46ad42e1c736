"""Opening a ``.pt2`` model file without letting it run code.

``torch.export.load`` unpickles payloads a crafted archive points it at, so torch only
ever reads an inert copy of the user's file (:mod:`quantlib.pt2archive`: raw tensors,
JSON and a checked graph). ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` stays set while loading,
a second layer should a future torch read an entry the copy lets through. Torch is
imported on use, so :class:`ModelError` costs nothing to import where no model is loaded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from quantlib.pt2archive import SAVE_A_MODEL, ModelError, write_inert_copy

if TYPE_CHECKING:
    import torch

__all__ = ["ModelError", "load_exported_program"]


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
    with open(path, "rb") as source, tempfile.TemporaryFile() as inert:
        write_inert_copy(source, inert)
        inert.seek(0)
        try:
            with _weights_only_loads():
                program = torch.export.load(inert)
        except Exception as exc:  # torch raises many types for a bad archive; all mean the same here
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path.name} is not a loadable torch.export program ({reason}); {SAVE_A_MODEL}") from exc
    return program
