"""What the commands share: the usage error, argument types, notes, Ctrl-C handling and a progress bar for any job."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..jobs import Job, drive


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None (whose meaning the help text says)."""

    def _get_help_string(self, action):
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def check_outputs(targets: dict[Path, list[Path]], option: str = "-o") -> None:
    """Before any compute: no output replaces an input, no two inputs write the same file, and every output folder
    can be written (a probe file is written and removed). ``targets``: each input's output files."""
    import os

    def real(p: Path) -> Path:  # never raises, also for a link to itself (Path.resolve does)
        return Path(os.path.realpath(p))

    inputs = {real(p): p for p in targets}
    writers: dict[Path, Path] = {}
    for src, outs in targets.items():
        for t in outs:
            r = real(t)
            if r in inputs:
                raise UsageError(f"writing {t} would replace the input '{inputs[r]}'; choose another {option}")
            if r in writers and writers[r] != src:
                raise UsageError(f"'{writers[r]}' and '{src}' would both be written as {t.name} in {t.parent}; give them "
                                 f"different {option} folders")
            writers[r] = src
    for folder in sorted({t.parent for outs in targets.values() for t in outs}):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{option} {folder} is a file, not a folder: name a folder for the results")
        probe = folder / ".emdenoise-write-test"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to {folder} ({exc.strerror or exc}); choose another {option}") from None


def pair(text: str) -> tuple[float, float]:
    parts = text.replace("x", ",").split(",")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like '3,-2', got {text!r}") from None
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers like '3,-2', got {text!r}")
    return vals[0], vals[1]


def size(text: str) -> tuple[int, int]:
    h, w = pair(text)
    if h != int(h) or w != int(w) or h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be whole pixels, at least 8, like 512 or 512x768; got {text!r}")
    return int(h), int(w)


def basis(text: str) -> tuple[tuple[float, float, float], ...]:
    out = []
    for item in text.split(";"):
        try:
            u, v, z = (float(x) for x in item.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"basis items are 'u,v,Z' separated by ';', like '0,0,42;0.5,0.5,8'; got {item!r}"
            ) from None
        out.append((u, v, z))
    return tuple(out)


def new_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_job(job: Job, desc: str, unit: str, should_stop=None, on_event=None):
    """Drive a core job (:mod:`..jobs`) to its result with a tqdm bar on stderr (off when not a terminal)."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, disable=None, leave=False) as bar:
        def show(event) -> None:
            bar.total, bar.n = event.total, int(event.done)  # whole steps; a step under way shows as its message
            bar.refresh()
            if on_event is not None:
                on_event(event)

        return drive(job, show, should_stop)


@contextlib.contextmanager
def notes():
    """Collect the core's DenoiseWarnings (rescaling, NaN pixels, memory) to print as one-line notes."""
    import warnings

    from ..inference import DenoiseWarning
    from ..jobs import thread_warnings

    with warnings.catch_warnings(record=True) as caught, thread_warnings(caught.append):
        warnings.simplefilter("always", DenoiseWarning)
        yield caught


def print_notes(caught, name: str) -> None:
    from ..inference import DenoiseWarning

    for w in caught:
        if issubclass(w.category, DenoiseWarning):
            print(f"{name}: note: {w.message}", file=sys.stderr)


@contextlib.contextmanager
def stop_on_interrupt(what: str):
    """The first Ctrl-C (SIGINT) or SIGTERM only sets the yielded event, so long work can stop at a consistent point;
    a second one raises KeyboardInterrupt as usual."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\n{name}: {what} (Ctrl-C again to quit at once)", file=sys.stderr)

    signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield stop
        return
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
