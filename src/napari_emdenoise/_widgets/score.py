"""Plugins > EM Denoise > Scores: how close a (denoised) layer is to a reference layer.

Thin: it picks the layers and runs the core ``metrics.score`` in a worker thread, then shows
the scores and stores them in the scored layer's metadata (``metadata["scores"]``).
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, Label, PushButton, create_widget
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error

from ..metrics import Scores, score
from ._common import Dock, current_plane

NO_DENT = "none"


class ScoreWidget(Dock):
    """Score the chosen layer against a reference (the truth of a simulated image)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self._worker: FunctionWorker | None = None
        self._output = create_widget(annotation=napari.layers.Image, label="scored layer",
                                     options={"tooltip": "the layer to judge, usually a denoised result"})
        self._reference = create_widget(annotation=napari.layers.Image, label="reference",
                                        options={"tooltip": "the truth to compare with, e.g. the clean image of a "
                                                            "simulation ('<name> truth' is chosen when there is one)"})
        self._dent = ComboBox(choices=self._dent_choices, label="dent map",
                              tooltip="optional: a dent mask or map (Image or Labels; largest value = inside the dent)")
        self._period = FloatSpinBox(value=0.0, min=0.0, max=1000.0, step=0.1, label="period (px)",
                                    tooltip="lattice period of the reference; 0: estimate it")
        self._run = PushButton(text="Score", tooltip="PSNR, SSIM and the atom-column scores of the scored layer against "
                                                      "the reference; stored in the layer's metadata")
        self._result = Label(value="", label="scores")
        self._result.native.setWordWrap(True)
        self.extend([self._output, self._reference, self._dent, self._period, self._run, self._result])
        self._run.clicked.connect(self.start)
        self._viewer.layers.events.inserted.connect(self._refresh)
        self._viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        self.fit_width()

    def _dent_choices(self, *_) -> list[str]:
        names = [ly.name for ly in self._viewer.layers if isinstance(ly, (napari.layers.Image, napari.layers.Labels))]
        return [NO_DENT, *names]

    def _refresh(self, event=None) -> None:
        self.reset_choices()  # napari does this too once docked, but maybe after us: pick from the current layers
        layers = self._viewer.layers
        if event is not None and not (event.type == "inserted" and event.value.name.endswith(" denoised")):
            return  # another layer came or went: what the user chose stays (a points layer made it jump back)
        denoised = [ly for ly in layers if ly.name.endswith(" denoised")]
        if denoised:  # the usual case: score what Denoise just added against its own truth and dent map
            self._output.value = denoised[-1]
            base = denoised[-1].name[: -len(" denoised")]
            truth = next((layers[n] for n in (f"{base} truth", f"{base} clean") if n in layers), None)
            if truth is not None and isinstance(truth, napari.layers.Image):
                self._reference.value = truth
            dent = next((n for n in (f"{base} dent map", f"{base} dent mask (edit)", f"{base} dent mask")
                         if n in layers), None)
            if dent is not None and self._dent.value == NO_DENT:
                self._dent.value = dent

    def start(self) -> FunctionWorker | None:
        out, ref = self._output.value, self._reference.value
        if out is None or ref is None:
            show_error("Choose the layer to score and a reference layer.")
            return None
        dent = None
        if self._dent.value != NO_DENT:
            d = current_plane(self._viewer, self._viewer.layers[self._dent.value]).astype(np.float64)
            top = float(np.nanmax(d)) if d.size else 0.0
            if top <= 0:
                show_error(f"The dent map '{self._dent.value}' is empty: paint or compute a mask first, or choose none.")
                return None
            dent = d / top
        a, b = current_plane(self._viewer, out), current_plane(self._viewer, ref)
        self._result.value = "scoring…"
        self._run.enabled = False
        self._worker = create_worker(score, a, b, dent, self._period.value or None, _ignore_errors=True)
        self._worker.returned.connect(lambda s: self._show(s, out))
        self._worker.errored.connect(self._failed)
        self._worker.finished.connect(self._done)
        self._worker.start()
        return self._worker

    def _show(self, s: Scores, layer) -> None:
        self._result.value = s.text().replace(", columns", "\ncolumns")
        layer.metadata["scores"] = {**s.to_dict(), "reference": self._reference.value.name}

    def _failed(self, exc: Exception) -> None:
        self._result.value = "not scored"
        show_error(f"Could not score: {exc}")

    def _done(self) -> None:
        self._worker = None
        self._run.enabled = True
