"""Progress events → a tqdm bar on stderr (or any callback of the user's)."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from ._models import ProgressEvent


class ProgressBar:
    """A progress callback that draws one tqdm bar (bytes, speed, ETA) on a stream."""

    def __init__(self, description: str = "", stream: TextIO | None = None) -> None:
        self._description = description
        self._stream = stream or sys.stderr
        self._bar: tqdm | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is None and event.kind in ("bytes", "started"):
            self._bar = tqdm(
                total=event.total,
                initial=event.done - event.delta,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self._description,
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
            )
        if self._bar is None:
            return
        if event.kind == "bytes":
            if event.total is not None and self._bar.total != event.total:
                self._bar.total = event.total
            self._bar.update(event.delta)
        elif event.kind in ("done", "failed"):
            self.close()

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
