"""napari reader: STEM TIFFs as image layers with their pixel size as scale; zarr stores and TIFFs above 8192^2 px as
lazy (dask) layers that napari reads slice by slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_info

from .io import LARGE_PX, is_em_path, is_tiff_path, is_zarr_path, read_em, read_lazy, read_tiff, read_tiff_header


def napari_get_reader(path):
    """Return a reader for one TIFF path; None for anything else, so napari asks another plugin."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str) and not hasattr(path, "__fspath__"):
        return None
    if is_zarr_path(path):
        return read_lazy_layer
    if is_em_path(path):
        return read_layer
    if not is_tiff_path(path):
        return None
    return read_layer


def read_layer(path):
    """Read one TIFF into napari layer data; raises ImageFileError with a clear message."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    if is_em_path(path):
        return _layer(read_em(path))
    try:
        shape = read_tiff_header(path).shape
    except Exception:  # noqa: BLE001 - read_tiff says what is wrong
        shape = ()
    if shape and int(np.prod(shape, dtype=np.int64)) > LARGE_PX:
        return read_lazy_layer(path)
    return _layer(read_tiff(path))


def _layer(img):
    for note in img.notes:
        show_info(note)
    kwargs = {"name": img.name, "scale": img.scale(), "metadata": img.metadata, "axis_labels": tuple(img.axes.lower())}
    if img.unit:
        kwargs["units"] = (img.unit,) * img.data.ndim
    return [(img.data, kwargs, "image")]


def read_lazy_layer(path):
    """A zarr store or a huge TIFF as a lazy (dask) layer: nothing is read until napari shows a slice."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    arr, pixel_size = read_lazy(path)
    name = Path(path).name
    name = name[: -len(".zarr")] if name.lower().endswith(".zarr") else Path(path).stem
    kwargs = {"name": name, "metadata": {"lazy": True, "path": str(path)}}
    if pixel_size is not None:
        kwargs["scale"] = (1.0,) * (arr.ndim - 2) + tuple(pixel_size)
        kwargs["units"] = ("nm",) * arr.ndim  # as for TIFF layers: napari compares units across layers
    return [(arr, kwargs, "image")]
