"""The one job protocol: every long flow is a generator of :class:`Event` that returns its result.

A job (``iter_denoise``, ``train``, ``iter_build_targets``, ``iter_bench``, ``iter_fidelity``,
``write_training_set``, ``write_set``) yields an :class:`Event` (or a subclass that carries more,
like ``TrainEvent``) after each step and ``return``s what it made. Closing the generator at a
yield cancels it; its ``finally``/``GeneratorExit`` cleanup leaves a consistent state (a training
run saves its last complete iteration, a half-written set is reported as such).

One driver runs any job: :func:`drive` in scripts, the CLI and tests (with a progress callback
and a stop test), and ``_widgets.base.JobWidget`` in napari (a worker thread, napari progress,
Cancel, an error toast and the finish that adds layers).
"""

from __future__ import annotations

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
