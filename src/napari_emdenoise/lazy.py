"""Lazy denoising of dask arrays: huge images and long series, computed chunk by chunk.

:func:`denoise_lazy` (reached through :func:`napari_emdenoise.denoise` with a dask array) returns
a lazy dask array of the same shape and chunks. Nothing heavy runs until it is computed (by
napari as the user browses, by ``.compute()``, or by a dask.distributed cluster).

* A chunk that holds whole planes is denoised exactly as the in-memory path would denoise those
  planes (its own intensity statistics; the period estimate shared from a sample).
* A plane split into several chunks is denoised part by part with what
  :func:`~napari_emdenoise.inference.shared_state` took once from a central sample of the
  first plane: the intensity mapping, the resampling factor and the network's normalisation
  statistics. Each chunk borrows ``depth`` px of context from its neighbours
  (``dask.array.map_overlap``), at least the tile plan's blend strip, so the result matches the
  in-memory path across chunk borders.
"""

from __future__ import annotations

import threading
import warnings
import numpy as np

from . import nets, tiling

SAMPLE = 2048  # px: side of the central sample that a split plane's shared state is taken from


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask when it is not)."""
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "chunks") and hasattr(x, "map_blocks")


def context(overlap: int, scale: float = 1.0) -> int:
    """Px of neighbouring chunks a chunk borrows: the widest strip a tile of the in-memory plan spends on context and
    blending, in the input's pixels (a resampled image needs proportionally more)."""
    strip = max(overlap, overlap // 2 + 2 * tiling.MIN_CONTEXT)
    return int(np.ceil(strip / min(scale, 1.0))) + 4


def _crop(arr, side: int):
    """The central ``side`` x ``side`` crop of the first plane (lazy)."""
    h, w = arr.shape[-2:]
    sh, sw = min(h, side), min(w, side)
    r0, c0 = (h - sh) // 2, (w - sw) // 2
    return arr[(0,) * (arr.ndim - 2) + (slice(r0, r0 + sh), slice(c0, c0 + sw))]


def _sample(arr, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` crop of the first plane, computed."""
    return np.asarray(_crop(arr, side).compute())


def denoise_lazy(arr, model=None, *, tile: int | None = 512, overlap: int = 64, batch_size: int | None = None,
                 device: str = "auto", period: float | None = None, rescale: bool = True, amp: bool = True,
                 invert: bool = False, sample: int = SAMPLE):
    """Denoise a dask array lazily (2-D, or a stack with any leading dimensions); returns a float32 dask array of the
    same shape and chunks. See the module's docstring for how chunks share what they must."""
    import dask.array as da

    from .inference import (DenoiseWarning, INVERTED_SKEW, _check_image, check_period, contrast_skew, denoise,
                            denoise_part, resolve_model, shared_state)

    if arr.dtype == object or arr.dtype.kind not in "uif":
        raise TypeError(f"image must be a numeric array (8/16/32-bit integers or floats), got dtype {arr.dtype}")
    if arr.ndim < 2 or 0 in arr.shape:
        raise ValueError(f"image must be a non-empty 2D image or a stack of them, got shape {arr.shape}")
    if min(arr.shape[-2:]) < 8:
        raise ValueError(f"image is too small to denoise: {arr.shape[-2:]} px (at least 8x8)")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) >= 8:
        _check_image(np.empty((8, 8, arr.shape[-1]), np.float32))  # the RGB message
    period = check_period(period, arr.shape)
    net = resolve_model(model)
    lock = threading.Lock()  # the network's normalisation layers hold per-call state: one chunk at a time per process
    src = -arr.astype(np.float32) if invert else arr
    smp = _sample(src, sample)
    if not invert and contrast_skew(smp) < INVERTED_SKEW:
        warnings.warn("the image looks like inverted contrast (bright-field or ABF); denoise it with invert=True",
                      DenoiseWarning, stacklevel=3)
    h, w = arr.shape[-2:]
    whole_planes = len(arr.chunks[-2]) == 1 and len(arr.chunks[-1]) == 1
    opts = dict(tile=tile, overlap=overlap, device=device, amp=amp)
    if whole_planes:
        shared = shared_state(smp, net, period=period, rescale=rescale, **opts) if period is None and rescale else None
        given = shared.plan.period if shared is not None else period

        def block(b):
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", DenoiseWarning)
                return denoise(b, net, batch_size=batch_size, period=given, rescale=rescale, **opts)

        note = shared.plan if shared is not None else None
        out = src.map_blocks(block, dtype=np.float32)
    else:
        import dask
        from dask.array.overlap import ensure_minimum_chunksize

        first = shared_state(smp, net, period=period, rescale=rescale, **opts)
        note = first.plan
        given = first.plan.period if (rescale and first.plan.scale != 1.0) else period

        align = nets.size_multiple(net)
        d = min(context(overlap, first.plan.scale), h - 1, w - 1)
        # every chunk at least as wide as the context it lends (dask would rechunk otherwise)
        plane_chunks = tuple(ensure_minimum_chunksize(d, c) if len(c) > 1 else c for c in arr.chunks[-2:])
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in plane_chunks]

        def part(b, shared, block_info=None):
            # the network is not shift-invariant (stride-2 layers): a part must start on the whole image's grid of
            # ``align`` px, as the in-memory tiles do; the few px cut for that come out of the borrowed context
            loc = block_info[0]["chunk-location"][-2:] if block_info else (0, 0)
            cut = [int(-(starts[a][i] - (d if i else 0)) % align) for a, i in enumerate(loc)]
            out = np.zeros(b.shape, np.float32)
            with lock:
                out[..., cut[0]:, cut[1]:] = denoise_part(b[..., cut[0]:, cut[1]:], net, shared, batch_size=batch_size, **opts)
            return out

        def plane_state(crop):
            with lock:
                return shared_state(crop, net, period=given, rescale=rescale and given is not None, **opts)

        if first.plan.scale != 1.0:
            warnings.warn("the image is resampled and its planes are split into chunks: each chunk is resampled on its own "
                          "grid, so results near chunk borders can differ from the in-memory path; chunks of whole planes "
                          "avoid this", DenoiseWarning, stacklevel=3)
        lead = list(np.ndindex(arr.shape[:-2]))
        planes = []
        for k, idx in enumerate(lead):  # each plane its own intensities and statistics, as in memory; plane 0's now
            plane = src[idx].rechunk(plane_chunks)
            shared = first if k == 0 else dask.delayed(plane_state, pure=True)(_crop(plane, sample),
                                                                              dask_key_name=f"emdenoise-state-{plane.name}")
            planes.append(plane.map_overlap(part, depth={0: d, 1: d}, boundary="none", dtype=np.float32, trim=True,
                                            shared=shared))
        out = (planes[0] if arr.ndim == 2 else da.stack(planes).reshape(arr.shape)).rechunk(arr.chunks)
    if note is not None and note.notify:
        warnings.warn(note.note, DenoiseWarning, stacklevel=3)
    return -out if invert else out


__all__ = ["context", "denoise_lazy", "is_dask"]
