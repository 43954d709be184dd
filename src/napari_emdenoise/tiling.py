"""Tile plan and blending windows for tiled inference.

Neighbouring tiles share a strip at least ``overlap`` px wide. A blend zone half that
wide is centred in the strip: across it one tile's weight falls as cos^2 while the
other's rises as sin^2, so the weights of all tiles sum to exactly 1 at every pixel (a
partition of unity) and no seam is possible by construction. The rest of the strip, at
least ``MIN_CONTEXT`` px at each tile edge (where convolution padding makes a tile differ
from the whole image), gets weight 0: it serves only as context. With the default
overlap of 64 px the strip is 80 px wide; smaller overlaps get a wider strip too.

Each tile also owns a *core*: the pixels closer to it than to any neighbour. The cores
partition the image; they are what the whole-image InstanceNorm statistics are computed
over (see :func:`napari_emdenoise.nets.record_statistics`). This module is numpy geometry
only; what touches a network lives in :mod:`.nets`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# px of context kept at a tile edge before its blending weight rises above 0, for callers that do not measure their
# network's own (:func:`napari_emdenoise.nets.context_px`: 31 px for the bundled model, 40-44 for reference ResNets)
MIN_CONTEXT = 24
MAX_RAISED_TILE = 1024  # px: a tile too small for the network's context is enlarged, up to this


def strip_width(overlap: int, context: int = MIN_CONTEXT) -> int:
    """Px two neighbouring tiles share: the blend zone (half the overlap) plus ``context`` on each side of it."""
    return max(overlap, int(np.ceil(overlap / 2)) + 2 * context) if overlap else 0


@dataclass(frozen=True)
class AxisTile:
    start: int
    stop: int
    core_start: int  # image coordinates
    core_stop: int
    weight: np.ndarray  # (stop - start,) blending weight


@dataclass(frozen=True)
class Tile:
    rows: AxisTile
    cols: AxisTile

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.rows.start, self.rows.stop), slice(self.cols.start, self.cols.stop)

    def window(self) -> np.ndarray:
        return np.outer(self.rows.weight, self.cols.weight).astype(np.float32)

    def core_mask(self) -> np.ndarray:
        r, c = self.rows, self.cols
        m = np.zeros((r.stop - r.start, c.stop - c.start), dtype=np.float32)
        m[r.core_start - r.start : r.core_stop - r.start, c.core_start - c.start : c.core_stop - c.start] = 1
        return m


def _rise(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """0 before the zone, sin^2 ramp across it, 1 after; a step when width is 0."""
    if width <= 0:
        return (x >= centre).astype(np.float64)
    t = np.clip((x - (centre - width / 2)) / width, 0.0, 1.0)
    return np.sin(np.pi / 2 * t) ** 2


def plan_axis(n: int, tile: int, overlap: int, align: int = 1, context: int = MIN_CONTEXT) -> list[AxisTile]:
    """Tiles along one axis of length n: evenly spaced, all of one size of at most ``tile``.

    The size is the smallest that covers n with as few tiles as ``tile`` would need, so an
    image barely larger than one tile is not computed twice over.

    Starts are multiples of ``align`` (a network that downsamples by 4 computes the same
    function on a tile only if the tile starts on its sampling grid); n and tile must
    then be multiples of ``align`` too.
    """
    if n <= tile:
        return [AxisTile(0, n, 0, n, np.ones(n))]
    zone = overlap / 2
    strip = min(strip_width(overlap, context), tile // 2)

    def count_for(size: int) -> int:
        step = max(1, (size - strip) // align)  # largest start-to-start distance, in align units
        return int(np.ceil((n - size) // align / step)) + 1

    count = count_for(tile)
    # the smallest tile that needs no more tiles: less work where the image is barely larger than one tile
    size = -(-(n + (count - 1) * strip) // count)
    size = min(tile, -(-size // align) * align)
    while count_for(size) > count:
        size += align
    tile = size
    units = (n - tile) // align
    starts = np.rint(np.linspace(0, units, count)).astype(int) * align
    stops = starts + tile
    bounds = [(starts[i + 1] + stops[i]) / 2 for i in range(count - 1)]  # centre of each shared strip
    x = np.arange(tile) + 0.5
    out = []
    for i in range(count):
        pos = starts[i] + x
        w = np.ones(tile)
        if i > 0:
            w *= _rise(pos, bounds[i - 1], zone)
        if i < count - 1:
            w *= 1.0 - _rise(pos, bounds[i], zone)
        core0 = 0 if i == 0 else int(np.floor(bounds[i - 1]))
        core1 = n if i == count - 1 else int(np.floor(bounds[i]))
        out.append(AxisTile(int(starts[i]), int(stops[i]), core0, core1, w))
    return out


def plan_tiles(shape: tuple[int, int], tile: int | None, overlap: int, align: int = 1,
               context: int = MIN_CONTEXT) -> list[Tile]:
    """Tiles covering a 2D image; ``tile=None`` gives one tile, the whole image.

    With ``align`` > 1 the image sides must be multiples of it (see :func:`napari_emdenoise.nets.pad_for_network`);
    the tile size is rounded down to a multiple of it (at least ``align``). A tile smaller than twice the strip that
    ``context`` needs (:func:`strip_width`) is enlarged to it, up to :data:`MAX_RAISED_TILE`: a smaller one would
    compute pixels whose convolutions reach the tile's edge.
    """
    h, w = shape
    if tile is None:
        return [Tile(plan_axis(h, h, 0)[0], plan_axis(w, w, 0)[0])]
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or not isinstance(overlap, (int, np.integer)):
        raise ValueError(f"tile and overlap are whole numbers of px, got tile {tile!r} and overlap {overlap!r}")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 px, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be between 0 and half the tile ({tile // 2} px), got {overlap}")
    if h % align or w % align:
        raise ValueError(f"image sides {shape} must be multiples of {align}; pad the image first")
    tile = max(tile, min(2 * strip_width(overlap, context), MAX_RAISED_TILE))
    tile = max(align, tile // align * align)
    return [Tile(r, c) for r in plan_axis(h, tile, overlap, align, context) for c in plan_axis(w, tile, overlap, align, context)]


def calibration_tiles(tiles: list[Tile], budget_px: int) -> list[Tile]:
    """All tiles when they fit the pixel budget, else an evenly spread subset."""
    per = (tiles[0].rows.stop - tiles[0].rows.start) * (tiles[0].cols.stop - tiles[0].cols.start)
    k = max(1, min(len(tiles), budget_px // max(per, 1)))
    if k >= len(tiles):
        return tiles
    idx = np.unique(np.floor((np.arange(k) + 0.5) * len(tiles) / k).astype(int))  # centred, evenly spread
    return [tiles[i] for i in idx]


def central_crop(image, max_side: int = 1024):
    """A central crop no larger than max_side (of the last two axes; a numpy array or a torch tensor): enough lattice
    periods for an estimate or a statistic, at a bounded cost on 8k images, and no aliasing with the lattice as a
    strided subsample has."""
    h, w = image.shape[-2:]
    ch, cw = min(h, max_side), min(w, max_side)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return image[..., r0 : r0 + ch, c0 : c0 + cw]
