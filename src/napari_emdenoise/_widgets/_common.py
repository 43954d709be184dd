"""Small helpers the flow widgets share."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def current_plane(viewer, layer) -> np.ndarray:
    """The 2D plane of ``layer`` that the viewer shows now (the layer itself when it is 2D)."""
    if layer.ndim == 2:
        return np.asarray(layer.data)
    index = layer.world_to_data(viewer.dims.point)[: layer.ndim - 2]
    index = tuple(int(np.clip(round(i), 0, n - 1)) for i, n in zip(index, layer.data.shape))
    return np.asarray(layer.data[index])


def chosen_path(value) -> Path | None:
    """A FileEdit's value as a path, or None when nothing was chosen."""
    return Path(value) if str(value) not in ("", ".") else None


def geometry(layer, translate: bool = True) -> dict:
    """Scale, translate and units of the last two axes of ``layer``, for a layer drawn over it (or, without the
    translate, for a new image at the same pixel size)."""
    out = {"scale": tuple(layer.scale[-2:]), "units": tuple(layer.units[-2:])}
    if translate:
        out["translate"] = tuple(layer.translate[-2:])
    return out
