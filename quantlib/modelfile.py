"""Opening a ``.pt2`` model file without letting it run code.

``torch.export.load`` unpickles payloads a crafted archive points it at, so torch only
ever reads an inert copy of the user's file (:mod:`quantlib.pt2archive`: raw tensors,
JSON and a checked graph). ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` stays set while loading,
a second layer should a future torch read an entry the copy lets through. Torch is
imported on use, so :class:`ModelError` costs nothing to import where no model is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
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
        logged: list[str] = []
        try:
            with _weights_only_loads(), _torch_export_log(logged):
                program = torch.export.load(inert)
        except Exception as exc:  # torch raises many types for a bad archive; all mean the same here
            raise ModelError(f"{path.name} is not a loadable torch.export program ({_why(exc, logged)})") from exc
    return program


@contextlib.contextmanager
def _torch_export_log(records: list[str]) -> Iterator[None]:
    """Collect what torch.export logs while loading: on a failure its exception says only "check the
    warnings above", and the cause is in them."""
    handler = _Collect(records)
    logger = logging.getLogger("torch.export")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Collect(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())
        if record.exc_info:
            self.records.append(logging.Formatter().formatException(record.exc_info))


def _why(exc: Exception, logged: list[str]) -> str:
    """The cause a user can act on: torch's own error from the logged traceback, else its message."""
    lines = [line.strip() for message in logged for line in message.splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    if causes and "in pytree is not registered" in causes[-1]:
        return (
            f"{causes[-1]}; the program returns or takes an object of that class, which only its library can "
            "rebuild: export a wrapper that returns plain tensors, e.g. a module whose forward returns "
            "model(x).logits"
        )
    if causes:
        return f"{causes[-1]}; {SAVE_A_MODEL}"
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"{reason}; {SAVE_A_MODEL}"
