"""The one way a flow widget runs a core job (:mod:`napari_emdenoise.jobs`) in napari.

:class:`JobWidget` holds what every long flow shares: a Run button, Cancel, a progress bar
(mirrored in napari's activity dock), a status line, and the worker that runs the core job
in a thread. A flow widget adds its own controls, calls :meth:`JobWidget.launch` with a core
job, and says what to do with the events (:meth:`on_event`) and the result
(:meth:`on_result`). Cancel quits the worker; :class:`ClosingWorker` then closes the job in
its own thread, so the job's cleanup (a training checkpoint, a partial target set's manifest)
runs at once. An error ends in one toast that names the flow; each warning the core job gives (a
NaN count, an inverted-contrast image, a rescale) becomes one warning notification, once per run.
"""

from __future__ import annotations

import napari
from magicgui.widgets import Label, ProgressBar, PushButton
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..jobs import Event
from ._common import Dock
from ._worker import ClosingWorker


class JobWidget(Dock):
    """A flow's controls followed by Run, Cancel, a progress bar and a status line.

    Subclasses set ``what`` (the flow's name in messages, e.g. "Denoising") and ``cancelled``
    (what a cancel leaves behind), implement ``start()`` (gather the inputs, then
    ``return self.launch(job, ...)``) and ``on_result``, and may extend ``on_event``.
    """

    what = "The job"
    STEPS = 1000  # the bars' resolution
    cancelled = "nothing was added."

    def __init__(self, napari_viewer: napari.viewer.Viewer, run_text: str, cancel_text: str = "Cancel",
                 run_tip: str = "", cancel_tip: str = "stop at the next safe point; nothing half-made is added"):
        super().__init__()
        self._viewer = napari_viewer
        self._worker: ClosingWorker | None = None
        self._dock_bar: progress | None = None
        self._returned, self._final_status = False, None
        self._warnings_shown: set[str] = set()
        self._run = PushButton(text=run_text, tooltip=run_tip or run_text)
        self._cancel = PushButton(text=cancel_text, enabled=False, tooltip=cancel_tip)
        self._progress = ProgressBar(value=0, min=0, max=1, label="progress", visible=False,
                                     tooltip="the job's progress; napari's activity dock (bottom right) shows it too")
        self._status = Label(value="", label="")
        self._status.native.setWordWrap(True)
        self._run.clicked.connect(lambda *_: self.start())  # clicked(bool) must not reach start's arguments
        self._cancel.clicked.connect(lambda *_: self.cancel())

    def add_section(self, widgets: list, title: str = "Advanced", before=None):
        """A folded section of ``widgets``, above the Run button unless told otherwise."""
        return super().add_section(widgets, title, before=before or self._run)

    def run_controls(self) -> list:
        """Run, Cancel, the progress bar and the status line, for the subclass to place under its controls."""
        return [self._run, self._cancel, self._progress, self._status]

    @property
    def running(self) -> bool:
        return self._worker is not None

    # ------------------------------------------------------------------ the protocol
    def start(self) -> ClosingWorker | None:  # pragma: no cover - every flow widget defines it
        raise NotImplementedError

    def launch(self, job, *args, **kwargs) -> ClosingWorker:
        """Run the core job ``job(*args, **kwargs)`` (a generator of Events) in a worker thread."""
        worker = ClosingWorker(job, *args, **kwargs)
        self._returned, self._final_status = False, None
        self._warnings_shown = set()
        if self._dock_bar is None:  # one activity-dock bar per job, made here: making it runs Qt events, so inside
            self._dock_bar = progress(total=self.STEPS, desc=self.what)  # _event a fast job's next event made another
        worker.yielded.connect(self._event)
        worker.returned.connect(self._result)
        worker.errored.connect(lambda exc: self.on_error(exc))
        # napari's worker would relay these itself, but its notifying mixin is never initialised (its __init__ is not
        # reached through QRunnable's), so the core's warnings went nowhere
        worker.warned.connect(self._warned)
        worker.aborted.connect(self._aborted)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop at the job's next step; the worker closes the job in its thread (its cleanup runs)."""
        if self._worker is not None:
            if self._worker.is_paused:
                self._worker.resume()
            self._worker.quit()

    def on_event(self, event: Event) -> None:
        """Called in the GUI thread with each event after the bars moved; subclasses add to it."""

    def on_result(self, result) -> None:  # pragma: no cover - every flow widget defines it
        raise NotImplementedError

    def on_error(self, exc: Exception) -> None:
        self._status.value = f"failed: {exc}"
        show_error(f"{self.what} failed: {exc}")

    # ------------------------------------------------------------------ internals
    def _window_gone(self, exc: RuntimeError) -> bool:
        """Whether ``exc`` says the dock's Qt objects were deleted (the viewer closed while a job ran; a script or a
        notebook still processes events): the job is asked to stop and the signal is dropped instead of raised, which
        aborted the process."""
        if "has been deleted" not in str(exc):
            return False
        self._returned = True
        if self._worker is not None:
            self._worker.quit()
        return True

    def _result(self, result) -> None:
        self._returned = True  # an event delivered after the result must not overwrite what the result shows
        try:
            self.on_result(result)
            self._final_status = self._status.value
        except RuntimeError as exc:
            if not self._window_gone(exc):
                raise

    def _aborted(self) -> None:
        self._returned = True  # an event still on its way must not put the last progress line back
        text = f"{self.what} cancelled; {self.cancelled}"
        try:
            self._status.value = text
        except RuntimeError:  # napari closing: the dock is gone already
            pass
        show_info(text)

    def _warned(self, args: tuple) -> None:
        """One warning notification per distinct warning of the core job (``args``: what ``showwarning`` gets)."""
        text = str(args[0]) if args else ""
        if text and text not in self._warnings_shown:
            self._warnings_shown.add(text)
            show_warning(f"{self.what}: {text}")

    def _event(self, event: Event) -> None:
        if self._returned:
            return
        try:
            self._show_event(event)
        except RuntimeError as exc:
            if not self._window_gone(exc):
                raise

    def _show_event(self, event: Event) -> None:
        total = max(float(event.total), 1.0)
        steps = round(self.STEPS * min(float(event.done), total) / total)
        self._progress.max = self.STEPS  # fine steps: a long first stage (whole-image statistics) moves the bar too
        self._progress.value = steps
        if event.message:
            self._status.value = event.message
        self.on_event(event)
        # last: napari's progress may process pending Qt events (the result, the finish) before it returns
        bar = self._dock_bar
        if bar is not None:
            bar.update(steps - bar.n)

    def _finished(self) -> None:
        self._worker = None
        try:
            if self._final_status is not None:  # what the result said stays, whatever arrived in between
                self._status.value = self._final_status
            if self._dock_bar is not None:
                self._dock_bar.close()
                self._dock_bar = None
            self._set_running(False)
        except RuntimeError as exc:
            if not self._window_gone(exc):
                raise

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._cancel.enabled = running
        self._progress.visible = running
        if running:
            self._progress.value = 0
