"""napari reader: STEM TIFFs as image layers with their pixel size as scale."""

from __future__ import annotations

from napari.utils.notifications import show_info

from .io import is_tiff_path, read_tiff


def napari_get_reader(path):
    """Return a reader for one TIFF path; None for anything else, so napari asks another plugin."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str) and not hasattr(path, "__fspath__"):
        return None
    if not is_tiff_path(path):
        return None
    return read_layer


def read_layer(path):
    """Read one TIFF into napari layer data; raises ImageFileError with a clear message."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    img = read_tiff(path)
    for note in img.notes:
        show_info(note)
    kwargs = {"name": img.name, "scale": img.scale(), "metadata": img.metadata, "axis_labels": tuple(img.axes.lower())}
    if img.unit:
        kwargs["units"] = (img.unit,) * img.data.ndim
    return [(img.data, kwargs, "image")]
