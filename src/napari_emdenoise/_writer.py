"""napari writer: an image layer as an ImageJ-compatible float32 TIFF with its pixel size."""

from __future__ import annotations

from .io import write_tiff


def write_image(path: str, data, meta: dict) -> list[str]:
    """Save one image layer; napari has already asked before replacing an existing file."""
    scale = meta.get("scale")
    pixel_size = None
    if scale is not None and len(scale) >= 2 and tuple(scale[-2:]) != (1.0, 1.0):
        pixel_size = (float(scale[-2]), float(scale[-1]))
    dtype = (meta.get("metadata") or {}).get("save_dtype", "float32")
    out = write_tiff(path, data, pixel_size=pixel_size, dtype=dtype, overwrite=True, description={"name": meta.get("name")})
    return [str(out)]
