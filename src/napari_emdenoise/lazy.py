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

import functools
import os
import threading
import numpy as np

from . import nets, tiling
from .jobs import thread_warnings, warn

SAMPLE = 2048  # px: side of the central sample that a split plane's shared state is taken from
_LOCK = threading.Lock()  # the network's normalisation layers hold per-call state: one chunk at a time per process


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask when it is not)."""
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "chunks") and hasattr(x, "map_blocks")


def context(overlap: int, scale: float = 1.0, net_context: int = tiling.MIN_CONTEXT) -> int:
    """Px of neighbouring chunks a chunk borrows: the widest strip a tile of the in-memory plan spends on context and
    blending (``net_context``: the network's own, :func:`.nets.context_px`), in the input's pixels (a resampled image
    needs proportionally more)."""
    return int(np.ceil(tiling.strip_width(overlap, net_context) / min(scale, 1.0))) + 4


def _crop(arr, side: int):
    """The central ``side`` x ``side`` crop of the first plane (lazy)."""
    return tiling.central_crop(arr[(0,) * (arr.ndim - 2)], side)


def _sample(arr, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` crop of the first plane, computed."""
    return np.asarray(_crop(arr, side).compute())


def _net(ref):
    """The network a chunk runs: the module itself, or a checkpoint path (None: the bundled model) loaded once per process
    (a cluster's workers load it from the shared file system instead of receiving it with every chunk)."""
    if ref is None or isinstance(ref, str):
        from .batch import _load

        return _load(ref)
    return ref


def _whole_block(b, *, ref, opts):
    from .inference import denoise

    with _LOCK, thread_warnings(None):  # the whole image's notes were given once, before the chunks
        return denoise(b, _net(ref), **opts)


def _part_block(b, shared, *, ref, opts, starts, depth, align, block_info=None):
    from .inference import denoise_part

    # the network is not shift-invariant (stride-2 layers): a part must start on the whole image's grid of ``align`` px,
    # as the in-memory tiles do; the few px cut for that come out of the borrowed context
    loc = block_info[0]["chunk-location"][-2:] if block_info else (0, 0)
    cut = [int(-(starts[a][i] - (depth if i else 0)) % align) for a, i in enumerate(loc)]
    out = np.zeros(b.shape, np.float32)
    with _LOCK:
        out[..., cut[0]:, cut[1]:] = denoise_part(b[..., cut[0]:, cut[1]:], _net(ref), shared, **opts)
    return out


def _plane_state(crop, *, ref, opts, period, rescale):
    from .inference import shared_state

    with _LOCK:
        return shared_state(crop, _net(ref), period=period, rescale=rescale, **opts)


def denoise_lazy(arr, model=None, *, tile: int | None = 512, overlap: int = 64, batch_size: int | None = None,
                 device: str = "auto", period: float | None = None, rescale: bool = True, amp: bool = True,
                 invert: bool = False, sample: int = SAMPLE):
    """Denoise a dask array lazily (2-D, or a stack with any leading dimensions); returns a float32 dask array of the
    same shape and chunks. See the module's docstring for how chunks share what they must. ``model``: a checkpoint
    path, None (the bundled model) or a module; a path is loaded once per process that computes chunks."""
    import dask
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize

    from .inference import DenoiseWarning, check_image_type, check_period, contrast_note, model_info, plan_rescale, shared_state

    check_image_type(arr.dtype, tuple(arr.shape))
    period = check_period(period, arr.shape)
    ref = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    net = _net(ref)
    src = -arr.astype(np.float32) if invert else arr
    smp = _sample(src, sample)
    note = contrast_note(smp, invert)
    if note:
        warn(note, DenoiseWarning, stacklevel=3)
    h, w = arr.shape[-2:]
    opts = dict(tile=tile, overlap=overlap, device=device, amp=amp)
    if len(arr.chunks[-2]) == 1 and len(arr.chunks[-1]) == 1:  # whole planes: each as in memory, the period shared
        finite = np.isfinite(smp) if smp.dtype.kind == "f" else None
        plan = plan_rescale(np.where(finite, smp, np.median(smp[finite])) if finite is not None and not finite.all() else smp,
                            model_info(net), period, rescale)
        out = src.map_blocks(functools.partial(_whole_block, ref=ref, opts={
            **opts, "batch_size": batch_size, "period": plan.period if rescale else None, "rescale": rescale}),
            dtype=np.float32)
    else:
        with _LOCK:
            first = shared_state(smp, net, period=period, rescale=rescale, **opts)
        plan = first.plan
        given = plan.period if (rescale and plan.scale != 1.0) else period
        align = nets.size_multiple(net)
        d = min(context(overlap, first.plan.scale, nets.context_px(net)), h - 1, w - 1)
        # every chunk at least as wide as the context it lends (dask would rechunk otherwise)
        plane_chunks = tuple(ensure_minimum_chunksize(d, c) if len(c) > 1 else c for c in arr.chunks[-2:])
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in plane_chunks]
        part = functools.partial(_part_block, ref=ref, opts={**opts, "batch_size": batch_size}, starts=starts, depth=d,
                                 align=align)
        state = functools.partial(_plane_state, ref=ref, opts=opts, period=given, rescale=rescale and given is not None)
        if first.plan.scale != 1.0:
            warn("the image is resampled and its planes are split into chunks: each chunk is resampled on its own "
                 "grid, so results near chunk borders can differ from the in-memory path; chunks of whole planes "
                 "avoid this", DenoiseWarning, stacklevel=3)
        planes = []
        for k, idx in enumerate(np.ndindex(arr.shape[:-2])):  # each plane its own intensities and statistics, as in memory
            plane = src[idx].rechunk(plane_chunks)
            shared = first if k == 0 else dask.delayed(state, pure=True)(_crop(plane, sample),
                                                                         dask_key_name=f"emdenoise-state-{plane.name}")
            planes.append(plane.map_overlap(part, depth={0: d, 1: d}, boundary="none", dtype=np.float32, trim=True,
                                            shared=shared))
        out = (planes[0] if arr.ndim == 2 else da.stack(planes).reshape(arr.shape)).rechunk(arr.chunks)
    if plan.notify:
        warn(plan.note, DenoiseWarning, stacklevel=3)
    return -out if invert else out


def iter_compute(arr, index: tuple = ()):
    """Compute a lazy (dask) array into memory piece by piece: a job (:mod:`.jobs`) with an :class:`~.jobs.Event` per
    plane of a stack, or per band of chunk rows of a 2-D image, so progress shows and a Cancel stops between pieces.
    ``index`` fixes leading axes (e.g. one plane). Returns the numpy array."""
    from .jobs import Event

    arr = arr[index] if index else arr
    out = np.empty(arr.shape, dtype=arr.dtype)
    if arr.ndim > 2:
        pieces = list(np.ndindex(arr.shape[:-2]))
    else:
        edges = np.concatenate([[0], np.cumsum(arr.chunks[0])])
        pieces = [(slice(int(a), int(b)),) for a, b in zip(edges[:-1], edges[1:])]
    yield Event(0, len(pieces), "denoise", "")
    for k, piece in enumerate(pieces):
        out[piece] = np.asarray(arr[piece].compute())
        yield Event(k + 1, len(pieces), "denoise")
    return out


__all__ = ["context", "denoise_lazy", "is_dask", "iter_compute"]
