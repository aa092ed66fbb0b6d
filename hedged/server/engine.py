"""The classifier and the one thread that runs it, behind a bounded queue.

One inference thread: torch (or ONNX Runtime) already uses every core for one
batch, so a second thread would only make requests wait on each other inside
the library. The bounded queue turns overload into an immediate 503 instead
of a backlog that makes every later request late.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger("hedged.server")


class NotReady(RuntimeError):
    """The model is not loaded (yet, or it failed to load), or the engine is closing."""


class QueueFull(RuntimeError):
    """Every queue slot is taken."""


class DeadlineExceeded(TimeoutError):
    """The job's deadline passed before the inference thread reached it."""


_STOP = object()


def _malloc_trim():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Return freed heap memory to the system after a job (``malloc_trim``, glibc only).

    A request with large photos decodes hundreds of megabytes that are freed at once;
    without this the process keeps them as its resident size until the next large one.
    """
    if _TRIM is not None:
        _TRIM(0)


class Engine:
    """Loads the classifier on its thread, then runs submitted jobs one at a time.

    Parameters
    ----------
    loader : callable() -> HedgedClassifier
        Called once, on the inference thread, by :meth:`start`.
    queue_size : int
        Jobs that may wait; :meth:`submit` raises :class:`QueueFull` beyond.
    """

    def __init__(self, loader: Callable[[], object], queue_size: int):
        self._loader = loader
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="hedged-inference", daemon=True)
        self._ready = threading.Event()
        self._closing = False
        self._busy = 0
        self.classifier = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None

    # ------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closing

    @property
    def loading(self) -> bool:
        return not self._ready.is_set() and self.load_error is None

    def depth(self) -> int:
        """Jobs waiting plus the one running."""
        return self._jobs.qsize() + self._busy

    def full(self) -> bool:
        """Whether a new job would be refused now (checked before a request's body is read)."""
        return self._jobs.full()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # ------------------------------------------------------------ control
    def start(self) -> Engine:
        self._thread.start()
        return self

    def submit(self, fn: Callable[[object], object], deadline: float | None = None) -> Future:
        """Queue ``fn(classifier)``; ``deadline`` is a ``time.monotonic()`` value.

        A job still queued at its deadline is dropped with :class:`DeadlineExceeded`;
        a cancelled future is skipped (the client already got its 504).
        """
        if not self.ready:
            raise NotReady(self.load_error or ("closing" if self._closing else "the model is still loading"))
        fut: Future = Future()
        try:
            self._jobs.put_nowait((fn, fut, deadline))
        except queue.Full:
            raise QueueFull(f"all {self._jobs.maxsize} queue slots are taken") from None
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish the queued ones, stop the thread."""
        self._closing = True
        if self._thread.is_alive():
            self._jobs.put(_STOP)  # after every queued job: they finish first
            self._thread.join(timeout)

    # ------------------------------------------------------------ thread
    def _run(self) -> None:
        start = time.perf_counter()
        try:
            self.classifier = self._loader()
        except Exception as err:  # noqa: BLE001 - reported by /readyz, not a dead thread
            self.load_error = f"the model failed to load: {' '.join(str(err).split()) or type(err).__name__}"
            log.error(self.load_error)
        else:
            self.load_seconds = time.perf_counter() - start
            log.info("model loaded in %.1f s", self.load_seconds)
            self._ready.set()
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, fut, deadline = job
            if not fut.set_running_or_notify_cancel():
                continue
            if deadline is not None and time.monotonic() > deadline:
                fut.set_exception(DeadlineExceeded("the request waited past its deadline"))
                continue
            self._busy = 1
            error = None
            try:
                result = fn(self.classifier)
            except BaseException as err:  # noqa: BLE001 - handed to the waiting request
                error = err
            # Give decoded photos' memory back to the system (glibc keeps freed arenas).
            release_memory()
            # Idle before the request wakes: it may read the depth at once (/metrics after a reply).
            self._busy = 0
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)
