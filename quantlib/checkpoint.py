"""Training checkpoints, so a run killed mid-training resumes at its last finished epoch.

At the end of each epoch but the last, the fine-tune hands its whole state (QAT model,
optimizer, lr schedule, the batch order's generator, torch's random state, the calibrated
state the run compares with at its end) to :class:`Checkpoints`, which writes it as one
file under a name the worker watches for and uploads. Restoring all of it makes the
resumed run compute what the uninterrupted one would have, batch for batch. torch is
imported where it is used: the worker reads the names here and never imports torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# a finished checkpoint's name; the worker uploads files matching it and nothing else
CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4})\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.pt"


@dataclass(frozen=True)
class Checkpoints:
    """Where a run writes its checkpoints (``folder``), and the one it resumes from, if any."""

    folder: Path
    resume_from: Path | None = None

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """Write ``state`` after ``epoch`` in one rename, so no reader sees half; drop the earlier ones."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{checkpoint_name(epoch)}.partial"
        torch.save(state, partial)
        partial.rename(self.folder / checkpoint_name(epoch))
        for older in self.folder.glob("epoch-*.pt"):
            if older.name != checkpoint_name(epoch):
                older.unlink()

    def load(self) -> dict[str, Any] | None:
        """The state to resume from; ``None`` (start over) without one, or if it cannot be read.

        Read with ``weights_only``: tensors, numbers and lists, never code, whoever wrote it.
        """
        import torch

        if self.resume_from is None:
            return None
        try:
            state = torch.load(self.resume_from, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file costs the epochs, not the job
            log.warning("the checkpoint %s cannot be read (%s); training starts over", self.resume_from, exc)
            return None
        return state if isinstance(state, dict) and isinstance(state.get("epoch"), int) else None
