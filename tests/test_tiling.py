import numpy as np
import pytest

from napari_emdenoise.tiling import MIN_CONTEXT, plan_tiles


def _paint(shape, tiles, what):
    acc = np.zeros(shape)
    for t in tiles:
        acc[t.slices] += what(t)
    return acc


@pytest.mark.parametrize(
    "shape, tile, overlap, align",
    [((300, 340), 128, 32, 1), ((384, 448), 128, 32, 4), ((512, 512), 256, 64, 4), ((100, 900), 96, 48, 4),
     ((1024, 1032), 512, 64, 4), ((40, 60), 128, 32, 4), ((512, 768), 256, 32, 128)],
)
def test_windows_are_a_partition_of_unity_and_cores_a_partition(shape, tile, overlap, align):
    tiles = plan_tiles(shape, tile, overlap, align=align)
    np.testing.assert_allclose(_paint(shape, tiles, lambda t: t.window()), 1.0, atol=1e-6)
    np.testing.assert_array_equal(_paint(shape, tiles, lambda t: t.core_mask()), 1.0)
    for t in tiles:
        assert t.rows.start % align == 0 and t.cols.start % align == 0
        assert t.rows.stop <= shape[0] and t.cols.stop <= shape[1]
        w = t.window()
        # next to a neighbour, the tile's edge is context only
        margin = min(max(overlap // 4, MIN_CONTEXT), (tile // 2 - overlap // 2) // 2)
        if t.rows.start > 0:
            assert w[:margin].max() < 1e-6
        if t.cols.stop < shape[1]:
            assert w[:, -margin:].max() < 1e-6


def test_neighbours_share_at_least_the_overlap():
    tiles = plan_tiles((1000, 1000), 256, 64, align=4)
    starts = sorted({t.rows.start for t in tiles})
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))
    assert len({t.rows.stop - t.rows.start for t in tiles}) == 1


def test_whole_image_is_one_tile():
    (t,) = plan_tiles((123, 45), None, 0)
    assert t.slices == (slice(0, 123), slice(0, 45)) and t.window().min() == 1.0


@pytest.mark.parametrize("tile, overlap, words", [(128, 80, "overlap"), (8, 0, "at least 16"), (128, -1, "overlap")])
def test_bad_plans_are_explained(tile, overlap, words):
    with pytest.raises(ValueError, match=words):
        plan_tiles((512, 512), tile, overlap)


def test_unaligned_image_is_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        plan_tiles((510, 512), 128, 32, align=4)


def test_an_image_barely_larger_than_a_tile_is_not_computed_twice():
    tiles = plan_tiles((1024, 1024), 512, 64, align=4)
    covered = sum((t.rows.stop - t.rows.start) * (t.cols.stop - t.cols.start) for t in tiles)
    assert covered < 1.35 * 1024 * 1024
    assert max(t.rows.stop - t.rows.start for t in tiles) <= 512


def test_statistics_tiles_are_spread_over_the_image():
    from napari_emdenoise.tiling import calibration_tiles

    tiles = plan_tiles((2048, 2048), 512, 64, align=4)
    per = (tiles[0].rows.stop - tiles[0].rows.start) * (tiles[0].cols.stop - tiles[0].cols.start)
    assert calibration_tiles(tiles, 10**9) == tiles
    (middle,) = calibration_tiles(tiles, per)
    assert middle is tiles[len(tiles) // 2]
    five = calibration_tiles(tiles, 5 * per)
    assert len(five) == 5 and len({t.rows.start for t in five}) >= 3


@pytest.mark.parametrize("context", [24, 40, 300])
def test_a_tile_too_small_for_the_networks_context_is_enlarged(context):
    from napari_emdenoise.tiling import MAX_RAISED_TILE, strip_width

    tiles = plan_tiles((1024, 1024), 128, 32, align=4, context=context)
    side = tiles[0].rows.stop - tiles[0].rows.start
    assert side == max(128, min(2 * strip_width(32, context), MAX_RAISED_TILE)) // 4 * 4
    for t in tiles:  # every pixel with weight keeps `context` px (or the image edge) on each side
        w = t.window()
        weighted = np.nonzero(w.max(axis=0) > 0)[0]
        need = min(context, (side - 16) // 2)
        assert t.cols.start == 0 or weighted[0] >= need
        assert t.cols.stop == 1024 or side - 1 - weighted[-1] >= need
