"""Lazy (dask) denoising: chunk by chunk, equal to the in-memory path across chunk borders."""

import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from napari_emdenoise import denoise, load_generator  # noqa: E402
from napari_emdenoise.inference import DenoiseWarning  # noqa: E402
from napari_emdenoise.simulate import simulate  # noqa: E402


def _span_error(a, b):
    return float(np.abs(a - b).max() / (a.max() - a.min()))


@pytest.fixture(scope="module")
def net(trained_model):
    return load_generator(trained_model)


@pytest.mark.parametrize("chunks", [(200, 160), (384, 448), (128, 448)])
def test_lazy_2d_equals_in_memory_across_chunk_borders(net, dented_image, chunks):
    img = dented_image.noisy
    lazy = denoise(da.from_array(img, chunks=chunks), net, tile=128, overlap=32)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32 and lazy.chunks == da.from_array(img, chunks=chunks).chunks
    out = lazy.compute()
    assert _span_error(denoise(img, net, tile=128, overlap=32), out) <= 0.01


def test_lazy_stack_keeps_each_planes_intensities(net):
    # planes at very different doses: each gets its own intensity mapping and statistics, as in memory
    stack = np.stack([simulate(size=(192, 256), period=12, dose=d, dents=1, seed=i).noisy * g
                      for i, (d, g) in enumerate(((2, 1.0), (8, 3.0), (30, 0.5)))])
    want = denoise(stack, net, tile=128, overlap=32)
    for chunks in [(1, 192, 256), (2, 100, 130), (3, 64, 256)]:
        got = denoise(da.from_array(stack, chunks=chunks), net, tile=128, overlap=32).compute()
        for k in range(3):
            assert _span_error(want[k], got[k]) <= 0.01, (chunks, k)


def test_lazy_4d_and_nan_pixels(net):
    stack = np.stack([simulate(size=(160, 160), period=12, dose=5, seed=i).noisy for i in range(4)]).reshape(2, 2, 160, 160)
    stack[1, 0, 10:14, 20:30] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenoiseWarning)
        want = denoise(stack, net, tile=128, overlap=32)
        got = denoise(da.from_array(stack, chunks=(1, 1, 96, 96)), net, tile=128, overlap=32).compute()
    assert got.shape == stack.shape
    assert np.isnan(got[1, 0, 10:14, 20:30]).all() and np.isfinite(got[0]).all()
    ok = np.isfinite(want)
    assert np.abs(got[ok] - want[ok]).max() <= 0.01 * np.ptp(want[ok])


def test_nothing_is_computed_until_asked(net, dented_image):
    calls = []

    def counted(block):
        if block.size:  # dask also calls it on empty arrays to learn the output type
            calls.append(block.shape)
        return block

    arr = da.from_array(dented_image.noisy, chunks=(192, 224)).map_blocks(counted, dtype=np.float32)
    lazy = denoise(arr, net, tile=128, overlap=32)
    before = len(calls)  # the central sample for the shared statistics only
    assert before <= 4
    lazy[:100, :100].compute()
    assert len(calls) - before <= 4  # the chunk and the neighbours it borrows context from, not the whole image


def test_lazy_refuses_what_memory_refuses(net):
    with pytest.raises(TypeError, match="numeric"):
        denoise(da.from_array(np.array([["a"] * 16] * 16)), net)
    with pytest.raises(ValueError, match="too small"):
        denoise(da.zeros((4, 100), chunks=2), net)
    with pytest.raises(ValueError, match="progress and cancel"):
        denoise(da.zeros((64, 64)), net, progress=print)


def test_iter_compute_goes_piece_by_piece_and_stops_between_pieces(net):
    from napari_emdenoise.jobs import Stopped, drive
    from napari_emdenoise.lazy import iter_compute

    stack = np.stack([simulate(size=(96, 96), period=12, dose=5, seed=i).noisy for i in range(3)])
    lazy = denoise(da.from_array(stack, chunks=(1, 96, 96)), net, tile=None)
    events = []
    out = drive(iter_compute(lazy), events.append)
    assert [(e.done, e.total) for e in events] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    np.testing.assert_allclose(out, denoise(stack, net, tile=None), atol=1e-5)
    flat = denoise(da.from_array(stack[0], chunks=(32, 96)), net, tile=None)
    assert [e.total for e in [next(iter_compute(flat))]] == [3]  # one piece per band of chunk rows
    with pytest.raises(Stopped):
        drive(iter_compute(lazy), None, lambda: True)
