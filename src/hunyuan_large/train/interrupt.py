"""Ctrl-C and SIGTERM as a request to stop at the next step boundary, so the saved state is whole.

A signal that lands mid-step would leave the data position, the RNGs and the optimizer between two
steps; saving that under either step number breaks exact resume. So the first SIGINT or SIGTERM
(schedulers send SIGTERM before killing a job) only sets `requested`; the loop finishes the step,
saves and stops. A second one stops at once without saving (the last checkpoint is kept), except
while a checkpoint is being written: that always completes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a deferred stop request (main thread only)."""

    def __init__(self, notify: Callable[[str], None] = print):
        self.notify = notify
        self.requested: str | None = None  # the name of the first signal received
        self._saving = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self._saving:
            self.requested = self.requested or name
            self.notify(f"{name}: writing a checkpoint, stopping once it is complete")
        elif self.requested is None:
            self.requested = name
            self.notify(f"{name}: stopping after this step, which will be saved "
                        "(press Ctrl-C again to stop now and keep the last checkpoint)")
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self):
        """Within this block signals never interrupt: a checkpoint being written completes."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
