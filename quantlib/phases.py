"""Progress of a run, phase by phase, for a person watching (a progress bar, a job row)."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Phase(enum.StrEnum):
    """What a run is doing, in order; the service shows the same names for its jobs."""

    LOADING = "loading"
    CALIBRATING = "calibrating"
    TRAINING = "training"
    TUNING = "tuning"  # spec.accuracy: trial N of max_trials
    EXPORTING = "exporting"
    EVALUATING = "evaluating"
    UPLOADING = "uploading"  # the worker publishing the results, after the run itself


# on_progress(phase, step, total, loss, epoch); loss and epoch are None outside training.
ProgressFn = Callable[[str, int, int, float | None, int | None], None]

PROGRESS_INTERVAL_S = 1.0


class Phases:
    """Times each phase and forwards progress at most once per interval, plus phase edges."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.name = ""
        self._last = 0.0

    @contextmanager
    def phase(self, name: Phase, total: int) -> Iterator[None]:
        self.name = name
        start = time.perf_counter()
        self._emit(0, total, None, None)
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        self._emit(total, total, None, None)

    def due(self) -> bool:
        return self.callback is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL_S

    def step(self, step: int, total: int, loss: float | None = None, epoch: int | None = None) -> None:
        self._emit(step, total, loss, epoch)

    def _emit(self, step: int, total: int, loss: float | None, epoch: int | None) -> None:
        if self.callback is not None:
            self._last = time.monotonic()
            self.callback(self.name, step, total, loss, epoch)
