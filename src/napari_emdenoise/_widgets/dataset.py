"""Plugins > EM Denoise > Target set: the target-set builder, previewed as layers, written in a worker.

Sources: the clean lattice is an image layer or the simulator; the masks are mask layers
(Image or Labels) and/or a folder of mask TIFFs; the noisy images for ``trainA`` are image
layers. "Preview" adds the first targets as layers without writing anything; "Build" writes
everything to the output folder in a worker running the builder's generator, with a
progress bar and Cancel (the manifest then lists what was written).
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, Select, SpinBox
from napari.utils.notifications import show_error, show_info

from ..dataset import (
    DatasetError,
    TargetSpec,
    iter_build_targets,
    iter_targets,
    parse_zoom,
)
from ..io import ImageFileError, list_tiffs, read_tiff
from ..simulate import simulate
from ._common import chosen_path, geometry
from .base import JobWidget

SIMULATED = "simulated lattice"
PREVIEW = "target "  # name prefix of preview layers


class DatasetWidget(JobWidget):
    """Build a training target set from a clean lattice and dent masks."""

    what = "Building the target set"
    cancelled = "the manifest lists the targets written so far."

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Build")
        self._lattice = ComboBox(choices=self._lattice_choices, label="clean lattice")
        self._sim_period = FloatSpinBox(value=16.0, min=3.0, max=100.0, step=0.5, label="simulated period (px)")
        self._mask_layers = Select(choices=self._mask_choices, label="mask layers")
        self._mask_dir = FileEdit(mode="d", value="", label="mask folder")
        self._noisy_layers = Select(choices=self._image_choices, label="noisy (trainA)")
        self._zooms = LineEdit(value="20MX=36x38", label="zooms", tooltip="LABEL=ACROSSxDOWN atoms, comma separated")
        self._per_mask = SpinBox(value=20, min=1, max=10_000, label="per mask")
        self._rotate = ComboBox(choices=[0, 90, 180, 270], value=0, label="rotate (cw)")
        self._depth = FloatSpinBox(value=0.4, min=0.0, max=0.95, step=0.05, label="dent depth")
        self._seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self._out = FileEdit(mode="d", value="", label="output folder")
        self._overwrite = CheckBox(value=False, text="replace an existing set")
        self._preview = PushButton(text="Preview 4 targets")
        self.extend([self._lattice, self._sim_period, self._mask_layers, self._mask_dir, self._noisy_layers, self._zooms,
                     self._per_mask, self._rotate, self._depth, self._seed, self._out, self._overwrite, self._preview,
                     *self.run_controls()])
        self._preview.clicked.connect(lambda *_: self.preview())  # clicked(False) must not arrive as the count

    # ------------------------------------------------------------------ choices (napari calls reset_choices)
    def _image_layers(self):
        return [layer for layer in self._viewer.layers if isinstance(layer, napari.layers.Image) and layer.ndim == 2]

    def _lattice_choices(self, *_):
        return [SIMULATED] + [layer.name for layer in self._image_layers()]

    def _mask_choices(self, *_):
        return [layer.name for layer in self._viewer.layers
                if isinstance(layer, (napari.layers.Image, napari.layers.Labels)) and "mask" in layer.name
                and layer.ndim == 2 and not layer.name.startswith(PREVIEW)]

    def _image_choices(self, *_):
        return [layer.name for layer in self._image_layers() if "mask" not in layer.name and not layer.name.startswith(PREVIEW)]

    # ------------------------------------------------------------------ inputs
    def _inputs(self):
        """Lattice, masks, spec and noisy images from the widgets; raises DatasetError/ValueError."""
        if self._lattice.value == SIMULATED or self._lattice.value is None:
            period = float(self._sim_period.value)
            lattice = simulate(size=(1024, 1024), period=period, dents=0, dose=1000.0, seed=int(self._seed.value)).clean
        else:
            lattice, period = np.asarray(self._viewer.layers[self._lattice.value].data), None
        masks = {}
        for name in self._mask_layers.value:
            data = np.asarray(self._viewer.layers[name].data, dtype=np.float32)
            if isinstance(self._viewer.layers[name], napari.layers.Labels):
                data = np.where(data > 0, 255.0, 0.0).astype(np.float32)
            masks[name] = data
        folder = chosen_path(self._mask_dir.value)
        for p in list_tiffs(folder) if folder is not None else []:
            masks[p.stem] = read_tiff(p).data.astype(np.float32)
        zooms = [parse_zoom(z) for z in self._zooms.value.replace(";", ",").split(",") if z.strip()]
        spec = TargetSpec(zooms=zooms, per_mask=int(self._per_mask.value), rotate=int(self._rotate.value),
                          dent_depth=float(self._depth.value), seed=int(self._seed.value), lattice_period=period)
        noisy = {name: np.asarray(self._viewer.layers[name].data) for name in self._noisy_layers.value}
        return lattice, masks, spec, noisy

    # ------------------------------------------------------------------ actions
    def preview(self, n: int = 4) -> list:
        """Add the first ``n`` targets as layers; nothing is written."""
        try:
            lattice, masks, spec, _ = self._inputs()
            targets = []
            for t in iter_targets(lattice, masks, spec):
                targets.append(t)
                if len(targets) >= n:
                    break
        except (DatasetError, ImageFileError, ValueError) as exc:
            show_error(str(exc))
            return []
        return [self._viewer.add_image(t.image, name=f"{PREVIEW}{t.filename}", **self._pixel_size(t.mask_name))
                for t in targets]

    def _pixel_size(self, mask_name: str) -> dict:
        """A target has the pixel size of the frames its mask came from: the mask layer's, else the first image's."""
        layers = self._viewer.layers
        source = layers[mask_name] if mask_name in layers else next(iter(self._image_layers()), None)
        return geometry(source, translate=False) if source is not None else {}

    def start(self):
        out = chosen_path(self._out.value)
        if out is None:
            show_error("Choose an output folder first.")
            return None
        try:
            lattice, masks, spec, noisy = self._inputs()
        except (DatasetError, ImageFileError, ValueError) as exc:
            show_error(str(exc))
            return None
        self._target = out
        return self.launch(iter_build_targets, lattice, masks, spec, out, noisy=noisy,
                           overwrite=bool(self._overwrite.value))

    def on_result(self, files) -> None:
        self._status.value = f"{len(files)} files written to {self._target}"
        show_info(f"Target set written to {self._target}")
