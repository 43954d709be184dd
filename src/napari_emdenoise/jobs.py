"""The one job protocol: every long flow is a generator of :class:`Event` that returns its result.

A job (``iter_denoise``, ``train``, ``iter_build_targets``, ``iter_bench``, ``iter_fidelity``,
``write_training_set``, ``write_set``) yields an :class:`Event` (or a subclass that carries more,
like ``TrainEvent``) after each step and ``return``s what it made. Closing the generator at a
yield cancels it; its ``finally``/``GeneratorExit`` cleanup leaves a consistent state (a training
run saves its last complete iteration, a half-written set is reported as such).

The core's warnings (``DenoiseWarning``: rescaling, NaN pixels, memory...) go through :func:`warn`: to the
``warnings`` module, or, in a thread that runs a job under :func:`thread_warnings`, to that job's receiver alone.

One driver runs any job: :func:`drive` in scripts, the CLI and tests (with a progress callback
and a stop test), and ``_widgets.base.JobWidget`` in napari (a worker thread, napari progress,
Cancel, an error toast and the finish that adds layers).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Generator, TypeVar

R = TypeVar("R")


@dataclass
class Event:
    """``done`` of ``total`` steps of a job; ``stage`` names the step, ``message`` says more."""

    done: int
    total: int
    stage: str = ""
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


Job = Generator[Event, None, R]


class Stopped(Exception):
    """``should_stop`` said so before the next step; the job was closed (its cleanup ran)."""


def drive(job: Job, on_event: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> R:
    """Run ``job`` to its end and return its value, passing each event to ``on_event``.

    When ``should_stop()`` turns true the job is closed (its cleanup runs) and
    :class:`Stopped` is raised.
    """
    try:
        while True:
            if should_stop is not None and should_stop():
                job.close()
                raise Stopped
            try:
                event = next(job)
            except StopIteration as done:
                return done.value
            if on_event is not None:
                on_event(event)
    finally:  # also when Ctrl-C or an error lands here, between two events: the job's cleanup runs now, not at exit
        job.close()


_receiver = threading.local()


def warn(message: str, category: type[Warning], stacklevel: int = 1) -> None:
    """Raise one of the core's warnings: to the receiver :func:`thread_warnings` set in this thread, or else as
    ``warnings.warn`` would (``stacklevel`` counts from the caller, as there)."""
    receive = getattr(_receiver, "receive", None)
    if receive is None:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    else:
        receive(warnings.WarningMessage(category(message), category, "", 0))


@contextlib.contextmanager
def thread_warnings(receive: Callable[[warnings.WarningMessage], None] | None):
    """While the block runs, the core's warnings raised in this thread go to ``receive`` (a
    ``warnings.WarningMessage``; None drops them), and nowhere else.

    ``warnings.catch_warnings`` cannot do this: it swaps the module's hooks and filters for the whole process, so a
    worker thread that ends its own ``catch_warnings`` puts back, under a job still running in another thread, what
    it found when it began. The Denoise widget lost its NaN and inverted-contrast warnings that way whenever the
    period estimate of the picked layer (another worker) ended while the denoising ran."""
    before = getattr(_receiver, "receive", None)
    _receiver.receive = receive if receive is not None else (lambda message: None)
    try:
        yield
    finally:
        _receiver.receive = before
