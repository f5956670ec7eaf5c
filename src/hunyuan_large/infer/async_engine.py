"""An Engine driven by a background thread, fed from an asyncio event loop (the server's).

The thread owns the engine: requests and aborts reach it through a queue and are applied between
steps, and each step's outputs go back to the per-request asyncio queues through the loop. While
idle it blocks on the queue, so an idle server costs nothing. Torch releases the GIL in its
kernels, so the event loop keeps serving HTTP while a step runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from .engine import Engine, StepOutput
from .sampling import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class EngineFailure:
    """Put on a request's queue instead of a StepOutput when the engine thread hit an error."""

    message: str


@dataclass
class _Pending:
    """A submitted request's output queue and how many of its samples have not finished."""

    queue: asyncio.Queue
    unfinished: int


class AsyncEngine:
    """Submit prompts from async code; read each request's StepOutputs from its own queue."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the engine thread; call from the event loop that will read the queues."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish and wait for it."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, request_id: str, prompt: list[int], params: SamplingParams) -> asyncio.Queue:
        """Queue a request; its `params.n` samples' outputs (each ending with finished=True) arrive on the queue."""
        q: asyncio.Queue = asyncio.Queue()
        self._pending[request_id] = _Pending(q, params.n)
        self._inbox.put(("add", request_id, prompt, params))
        return q

    def abort(self, request_id: str) -> None:
        """Stop a request (e.g. its client went away); its slot is freed before the next step."""
        if self._pending.pop(request_id, None) is not None:
            self._inbox.put(("abort", request_id))

    def load(self) -> dict:
        """Running and waiting sequence counts (read without locking: for monitoring)."""
        return {"running": len(self.engine.running), "waiting": len(self.engine.waiting)}

    # ----- the engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            # Block while idle; between steps take whatever arrived without waiting.
            commands = [self._inbox.get()] if not self.engine.has_unfinished() else []
            while not self._inbox.empty():
                commands.append(self._inbox.get())
            if any(c is None for c in commands):
                return
            for c in commands:
                if c[0] == "abort":
                    self.engine.abort(c[1])
                    continue
                try:
                    self.engine.add_request(c[2], c[3], request_id=c[1])
                except Exception as e:  # the server checks first; this is the last line of defence
                    self._deliver([(c[1], EngineFailure(str(e)))])
            try:
                outputs = self.engine.step() if self.engine.has_unfinished() else []
            except Exception as e:  # never let one bad step kill the server: fail what was in flight
                log.exception("engine step failed")
                self._fail_all(f"engine error: {e}")
                continue
            self._deliver([(out.request_id, out) for out in outputs])

    def _deliver(self, items: list[tuple[str, StepOutput | EngineFailure]]) -> None:
        """Hand a step's outputs to their queues with one wake-up of the event loop, not one each."""
        routed = []
        for request_id, item in items:
            pending = self._pending.get(request_id)
            if pending is None:
                continue  # aborted meanwhile
            if isinstance(item, EngineFailure) or item.finished:
                pending.unfinished -= 1
                if isinstance(item, EngineFailure) or pending.unfinished == 0:
                    self._pending.pop(request_id, None)
            routed.append((pending.queue, item))
        if routed:
            self._loop.call_soon_threadsafe(_put_all, routed)

    def _fail_all(self, message: str) -> None:
        for seq in [*self.engine.waiting, *self.engine.running]:
            self.engine.abort(seq.request_id)
        self.engine.step()  # drops the aborted requests and frees their slots
        self._deliver([(request_id, EngineFailure(message)) for request_id in list(self._pending)])


def _put_all(routed: list[tuple[asyncio.Queue, StepOutput | EngineFailure]]) -> None:
    for q, item in routed:
        q.put_nowait(item)
