"""Driving the core's progress-event generators to their result (scripts, CLI, tests)."""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

E = TypeVar("E")
R = TypeVar("R")


class Stopped(Exception):
    """``should_stop`` said so before the next step; the generator was closed."""


def drive(gen: Generator[E, None, R], on_event: Callable[[E], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> R:
    """Run ``gen`` to its end and return its value, passing each event to ``on_event``.

    When ``should_stop()`` turns true the generator is closed (its cleanup runs) and
    :class:`Stopped` is raised.
    """
    while True:
        if should_stop is not None and should_stop():
            gen.close()
            raise Stopped
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)
