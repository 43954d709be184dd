import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_emdenoise import Cancelled, denoise, load_generator
from napari_emdenoise.inference import (
    DenoiseWarning,
    Progress,
    pick_device,
    plan_rescale,
)
from napari_emdenoise.nets import EDGE, GeneratorConfig, build_generator, init_weights, pad_for_network, padded_shape
from napari_emdenoise.simulate import simulate
from napari_emdenoise.nets import context_px, tile_norms


def _psnr(x, truth):
    return 10 * np.log10((truth.max() - truth.min()) ** 2 / np.mean((x - truth) ** 2))


def test_the_small_model_denoises(trained_model, dented_image):
    out = denoise(dented_image.noisy, trained_model, tile=None)
    assert out.dtype == np.float32 and out.shape == dented_image.noisy.shape
    assert _psnr(out, dented_image.clean) > _psnr(dented_image.noisy, dented_image.clean) + 5


@pytest.mark.parametrize("tile", [128, 192, 256, 512])
@pytest.mark.parametrize("overlap", [32, 64])
def test_tiled_equals_whole_image_within_one_percent(trained_model, dented_image, tile, overlap, tiled):
    net = load_generator(trained_model)
    whole = denoise(dented_image.noisy, net, tile=None)
    tiled = denoise(dented_image.noisy, net, tile=tile, overlap=overlap)
    span = whole.max() - whole.min()
    assert np.abs(tiled - whole).max() <= 0.01 * span


SHARED = Path(os.environ.get("EMDENOISE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE_G = SHARED / "reference" / "resnet_6blocks_ngf32_nc1_latest_net_G_A.pth"


@pytest.mark.parametrize("which", ["reference", "resnet_9blocks"])
def test_any_generator_in_tiles_of_128_stays_within_one_percent_of_the_whole_image(which, tiled):
    """Tiles keep each network's own context (measured): a reference ResNet needs 40-44 px, not the 24 once fixed."""
    if which == "reference":
        if not REFERENCE_G.exists():
            pytest.skip("../shared/reference is absent")
        net = load_generator(REFERENCE_G)
    else:
        torch.manual_seed(0)
        net = build_generator(GeneratorConfig("resnet_9blocks", ngf=32))
        init_weights(net)
    assert 32 <= context_px(net) <= 56
    img = simulate(size=(256, 320), period=12, dose=3, dents=1, dent_depth=0.5, seed=99).noisy
    whole = denoise(img, net, tile=None, rescale=False)
    tiled = denoise(img, net, tile=128, overlap=32, rescale=False)
    assert np.abs(tiled - whole).max() <= 0.01 * np.ptp(whole)


def test_the_context_is_measured_once_per_set_of_weights():
    torch.manual_seed(0)
    net = build_generator(GeneratorConfig("resnet_6blocks", ngf=8))
    init_weights(net)
    first = context_px(net)
    key = net._emdenoise_context[0]
    assert context_px(net) == first and net._emdenoise_context[0] is key  # kept
    with torch.no_grad():
        next(net.parameters()).mul_(1.5)  # trained further: measured again
    context_px(net)
    assert net._emdenoise_context[0] != key


def test_per_tile_instance_norm_would_shift_intensities(trained_model, dented_image, monkeypatch):
    """The problem the whole-image statistics solve: the same tiles normalised on their own."""
    net = load_generator(trained_model)
    whole = denoise(dented_image.noisy, net, tile=None)
    import napari_emdenoise.inference as d

    monkeypatch.setattr(d, "_whole_pass_budget", lambda *a: 0)
    monkeypatch.setattr(d, "_calibration_budget", lambda *a: 1)  # statistics from a single tile, not the whole image
    with pytest.warns(DenoiseWarning, match=r"statistics come from 1 of its 30 tiles \(\d+ % of the image\)"):
        one_tile_stats = denoise(dented_image.noisy, net, tile=128, overlap=32)
    span = whole.max() - whole.min()
    assert np.abs(one_tile_stats - whole).max() > 0.01 * span


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float64"])
def test_dtypes_shapes_and_intensity_scale(trained_model, dtype):
    sim = simulate(size=(150, 230), period=12, dose=20, seed=4)
    img = (sim.noisy * (3 if dtype != "uint8" else 1)).astype(dtype)
    out = denoise(img, trained_model, tile=128, overlap=32)
    assert out.shape == img.shape and out.dtype == np.float32
    # the output lives on the input's intensity scale
    assert abs(out.mean() - img.mean()) < 0.15 * img.std()


def test_image_smaller_than_the_tile_and_a_stack(trained_model):
    stack = np.stack([simulate(size=(60, 90), period=12, dose=8, seed=s).noisy for s in range(3)])
    events = []
    out = denoise(stack, trained_model, tile=512, progress=events.append)
    assert out.shape == stack.shape
    assert not np.allclose(out[0], out[1])
    assert events[-1].done == events[-1].total == 3


def test_progress_is_monotonic_and_complete(trained_model, dented_image, two_tile_statistics):
    events: list[Progress] = []
    denoise(dented_image.noisy, trained_model, tile=128, overlap=32, batch_size=3, progress=events.append)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total > 3
    stats = [e for e in events if e.stage == "statistics"]
    assert stats[-1].done == 2 and all(e.done <= 2 for e in stats)  # the statistics batch's outputs are kept
    batches = [e for e in events if e.stage == "denoise" and not e.message]  # one per batch; during one, "% of the network"
    assert len(batches) == int(np.ceil((events[-1].total - 2) / 3))


def test_the_statistics_pass_reports_progress_and_cancels_between_layers(trained_model, dented_image, two_tile_statistics,
                                                                       monkeypatch):
    import napari_emdenoise.inference as inference

    net = load_generator(trained_model)
    whole = denoise(dented_image.noisy, net, tile=128, overlap=32)
    monkeypatch.setattr(inference, "PROGRESS_EVERY_S", 0.0)  # an event at every poll: as a long pass on a big image
    events = []
    again = denoise(dented_image.noisy, net, tile=128, overlap=32, progress=events.append)
    inside = [e for e in events if e.stage == "statistics" and 0 < e.done < 2]
    assert inside and "% of the network" in inside[0].message  # the bar moves during the one long pass
    assert np.array_equal(again, whole)
    stop = threading.Event()

    def on_progress(p):
        if p.stage == "statistics":
            stop.set()  # Cancel pressed while the statistics pass runs

    with pytest.raises(Cancelled):
        denoise(dented_image.noisy, net, tile=128, overlap=32, progress=on_progress, cancel=stop)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # nothing left behind
    assert all(m.mode == "instance" for m in tile_norms(net))
    assert np.array_equal(denoise(dented_image.noisy, net, tile=128, overlap=32), whole)


def test_cancel_stops_within_a_batch_and_leaves_the_model_clean(trained_model, dented_image, two_tile_statistics):
    net = load_generator(trained_model)
    stop = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p.stage == "denoise":
            stop.set()

    with pytest.raises(Cancelled):
        denoise(dented_image.noisy, net, tile=128, overlap=32, batch_size=2, progress=on_progress, cancel=stop)
    assert [p.stage for p in seen].count("denoise") == 1
    assert all(m.mode == "instance" for m in tile_norms(net))


def test_rescale_to_the_model_period(trained_model):
    net = load_generator(trained_model)
    info = net.info
    assert info.period == pytest.approx(12.0, rel=0.02)
    coarse = simulate(size=(256, 256), period=24, dose=6, seed=5)
    plan = plan_rescale(coarse.noisy, info)
    assert plan.period == pytest.approx(24.0, rel=0.02) and plan.scale == pytest.approx(0.5, rel=0.02)
    assert plan_rescale(coarse.noisy, info, period=20.0).scale == pytest.approx(info.period / 20.0)
    assert plan_rescale(coarse.noisy, info, rescale=False).scale == 1.0
    with pytest.warns(DenoiseWarning, match="resampled"):
        out = denoise(coarse.noisy, net, tile=128, overlap=32)
    assert out.shape == coarse.noisy.shape
    assert _psnr(out, coarse.clean) > _psnr(coarse.noisy, coarse.clean) + 3


def test_no_lattice_means_no_rescaling_with_a_notice(trained_model):
    noise = np.random.default_rng(0).poisson(5.0, (128, 128)).astype(np.float32)
    with pytest.warns(DenoiseWarning, match="no clear lattice"):
        out = denoise(noise, trained_model, tile=None)
    assert out.shape == noise.shape


def test_nan_pixels_are_reported_and_stay_nan(trained_model):
    img = simulate(size=128, period=12, dose=8, seed=6).noisy
    img[10, 20] = np.nan
    img[50, 60] = np.inf
    with pytest.warns(DenoiseWarning, match="2 NaN/Inf"):
        out = denoise(img, trained_model, tile=None)
    assert np.isnan(out[10, 20]) and np.isnan(out[50, 60])
    assert np.isfinite(out).sum() == out.size - 2


def test_rgb_model_on_a_grey_image(tmp_path):
    net = init_weights(build_generator(GeneratorConfig("resnet_6blocks", 3, 3, ngf=4)), seed=1).eval()
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    out = denoise(img, net, tile=None, rescale=False)
    x = torch.from_numpy((img - np.percentile(img, 0.5)) * 2 / (np.percentile(img, 99.5) - np.percentile(img, 0.5)) - 1)
    with torch.no_grad():  # the image mirrored as for any network, cropped back
        y = net(pad_for_network(x[None, None], 4).repeat(1, 3, 1, 1)).mean(dim=1)[0, EDGE : EDGE + 64, EDGE : EDGE + 64].numpy()
    lo, hi = np.percentile(img, [0.5, 99.5])
    np.testing.assert_allclose(out, y * (hi - lo) / 2 + (hi + lo) / 2, atol=1e-4)


@pytest.mark.parametrize(
    "image, err, words",
    [
        (np.zeros(10), ValueError, "2D image"),
        (np.zeros((0, 10)), ValueError, "non-empty"),
        (np.zeros((4, 4)), ValueError, "too small"),
        (np.zeros((32, 32), dtype=complex), TypeError, "numeric"),
        (np.zeros((32, 32), dtype=bool), TypeError, "numeric"),
        (np.full((32, 32), np.nan), ValueError, "no finite pixels"),
        (np.full((3, 32, 32), np.inf), ValueError, "no finite pixels"),
        ([np.zeros((32, 32)), np.zeros((16, 32))], ValueError, r"one shape, got \[\(16, 32\), \(32, 32\)\]"),
    ],
)
def test_bad_images_are_explained(trained_model, image, err, words):
    with pytest.raises(err, match=words):
        denoise(image, trained_model)


def test_devices():
    from napari_emdenoise.inference import available_devices

    choices = available_devices()  # what the widgets and --device offer: each one works here
    assert choices[0] == "auto" and choices[-1] == "cpu" and ("cuda" in choices) == torch.cuda.is_available()
    assert {pick_device(c).type for c in choices} <= {"cpu", "cuda", "mps"}
    assert pick_device("auto").type == "cuda" if torch.cuda.is_available() else pick_device("auto").type in ("cpu", "mps")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_bare_module_without_metadata_is_not_rescaled():
    net = init_weights(build_generator(GeneratorConfig(ngf=4)), seed=0).eval()
    img = simulate(size=96, period=10, seed=1).noisy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        denoise(img, net, tile=None)
    assert any("does not record its training period" in str(w.message) for w in caught)


def test_out_of_memory_halves_the_batch_and_finishes(trained_model, dented_image, two_tile_statistics):
    net = load_generator(trained_model)
    context_px(net)  # measured once per set of weights (two passes of one image), before the batches counted here
    forward = net.forward
    sizes = []

    def tight_memory(x):
        sizes.append(x.shape[0])
        if x.shape[0] > 2 and len(sizes) > 1:  # the statistics pass (first call) may hold all tiles
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)

    net.forward = tight_memory
    reference = denoise(dented_image.noisy, load_generator(trained_model), tile=128, overlap=32, batch_size=8)
    with pytest.warns(DenoiseWarning, match="batch size lowered to"):
        out = denoise(dented_image.noisy, net, tile=128, overlap=32, batch_size=8)
    np.testing.assert_allclose(out, reference, atol=1e-4)
    assert sizes[1:3] == [8, 4] and max(sizes[3:]) == 2


def test_a_whole_image_pass_out_of_memory_falls_back_to_tiles(trained_model, dented_image):
    net = load_generator(trained_model)
    context_px(net)  # measured before the passes counted here
    forward = net.forward
    shapes = []
    whole_shape = padded_shape(dented_image.noisy.shape, 4)  # the image with its mirrored margins

    def no_room_for_the_whole(x):
        shapes.append(tuple(x.shape[-2:]))
        if x.shape[-2:] == whole_shape:
            raise RuntimeError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return forward(x)

    net.forward = no_room_for_the_whole
    with pytest.warns(DenoiseWarning, match="whole 384x448 image did not fit in cpu memory at once: denoised in tiles"):
        out = denoise(dented_image.noisy, net, tile=128, overlap=32)
    assert shapes[0] == (392, 456) and len(set(shapes[1:])) == 1 and max(shapes[1]) < 384  # then tiles of one size
    whole = denoise(dented_image.noisy, load_generator(trained_model), tile=None)
    assert np.abs(out - whole).max() <= 0.01 * np.ptp(whole)


def test_one_tile_that_does_not_fit_is_explained(trained_model):
    net = load_generator(trained_model)

    def no_memory(x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")

    net.forward = no_memory
    with pytest.raises(MemoryError, match="smaller tile size"):
        denoise(simulate(size=64, period=12, seed=0).noisy, net, tile=None, batch_size=1)


def test_the_bundled_default_model_is_used_when_none_is_given():
    from napari_emdenoise.inference import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 5 * 2**20
    info = load_generator(DEFAULT_MODEL).info
    assert info.description.startswith("bundled default") and info.clip > 5
    lo, hi = info.period_range
    assert lo < 6 and hi > 14  # trained at every scale in between: no resampling there
    sim = simulate(size=(256, 256), period=14, dose=4, dents=1, seed=21)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DenoiseWarning)  # inside the range: nothing to warn about
        out = denoise(sim.noisy)
    assert _psnr(out, sim.clean) > _psnr(sim.noisy, sim.clean) + 5
    coarse = simulate(size=(256, 256), period=40, dose=4, seed=22)
    with pytest.warns(DenoiseWarning, match="outside the model's trained range"):
        denoise(coarse.noisy)


@pytest.mark.parametrize("tile, overlap", [(192, 32), (256, 64), (512, 64)])
def test_the_bundled_model_tiled_equals_whole_image_within_one_percent(tile, overlap):
    from napari_emdenoise.inference import DEFAULT_MODEL

    sim = simulate(size=(768, 640), period=14, dose=3, dents=1, dent_depth=0.35, seed=31)
    net = load_generator(DEFAULT_MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenoiseWarning)  # resampled to the model's period
        whole = denoise(sim.noisy, net, tile=None, device="cpu")
        tiled = denoise(sim.noisy, net, tile=tile, overlap=overlap, device="cpu")
    assert np.abs(tiled - whole).max() < 0.01 * (whole.max() - whole.min())


def test_a_model_with_a_period_range_resamples_only_images_outside_it():
    from napari_emdenoise.checkpoints import ModelInfo
    from napari_emdenoise.inference import plan_rescale

    info = ModelInfo(period=10.0, period_range=(6.0, 18.0))
    img = np.zeros((64, 64), np.float32)
    assert plan_rescale(img, info, period=12.0).scale == 1.0
    assert plan_rescale(img, info, period=17.9).scale == 1.0
    # a little outside the range is left alone: resampling by a factor near 1 costs more than it gains
    assert plan_rescale(img, info, period=5.0).scale == 1.0 and plan_rescale(img, info, period=22.0).scale == 1.0
    low = plan_rescale(img, info, period=4.0)
    assert low.scale == pytest.approx(1.5) and low.notify and "outside" in low.note
    assert plan_rescale(img, info, period=36.0).scale == pytest.approx(0.5)
    assert plan_rescale(img, ModelInfo(period=10.0), period=12.0).scale == pytest.approx(10 / 12)  # no range: to the period


@pytest.mark.parametrize("period", [0, -5, float("nan"), float("inf"), 1e6, "abc"])
def test_an_impossible_period_is_refused_before_any_work(period):
    img = simulate(size=64, period=12, seed=0).noisy
    with pytest.raises(ValueError, match="period must be"):
        denoise(img, period=period)


def test_constant_images_of_any_magnitude_and_rgb_arrays():
    for value in (0.0, 5.0, 1e30, -1e30):
        out = denoise(np.full((64, 64), value, np.float32))
        assert np.isfinite(out).all() and np.abs(out - value).max() <= 0.05 * max(1.0, abs(value) * 1e-3)
    rgb = np.repeat(simulate(size=64, period=12, seed=0).noisy[..., None], 3, axis=-1)
    with pytest.raises(ValueError, match="RGB"):
        denoise(rgb)


def test_float64_values_float32_cannot_hold_are_refused_not_hidden():
    noisy = simulate(size=64, period=12, seed=0).noisy.astype(np.float64)
    with pytest.raises(ValueError, match="the image holds values up to 6.9e\\+39, beyond the float32 range"):
        denoise(noisy * 1e38)  # float32 would make every pixel Inf: "no finite pixels"
    with pytest.raises(ValueError, match="plane 1 holds values from .* all one value in the float32"):
        denoise(np.stack([noisy, noisy * 1e-300]))  # float32 would make it 0: "constant"
    with pytest.raises(ValueError, match="all one value"):
        denoise(1e9 + noisy[:32, :32] * 1e-6)
    tiny = denoise(noisy * 1e-30, tile=None)  # small but within float32: denoised as it is
    assert np.corrcoef(tiny.ravel(), denoise(noisy, tile=None).ravel())[0, 1] > 0.999


def test_inverted_contrast_is_noticed_and_denoised_with_invert():
    from napari_emdenoise.inference import contrast_skew

    s = simulate(size=256, period=12, dose=5, dents=1, seed=3)
    bright_field = (s.noisy.max() + 5 - s.noisy).astype(np.float32)  # columns darker than the background
    truth = s.noisy.max() + 5 - s.clean
    assert contrast_skew(s.noisy) > 1.5 and contrast_skew(bright_field) < -1.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = denoise(bright_field, tile=None)
    assert any("inverted contrast" in str(w.message) and "invert=True" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inverted = denoise(bright_field, tile=None, invert=True)
    assert not any("inverted contrast" in str(w.message) or "invert is on" in str(w.message) for w in caught)
    psnr = lambda o: 10 * np.log10(np.ptp(truth) ** 2 / np.mean((o - truth) ** 2))  # noqa: E731
    assert inverted.mean() == pytest.approx(truth.mean(), rel=0.05)  # the result is turned back: still bright-field
    assert psnr(inverted) >= psnr(plain) + 3.0
    # the other way round: invert left on for an ADF image (it was silent, and the result 6 dB worse)
    with pytest.warns(DenoiseWarning, match="invert is on, but the image has bright columns on a dark background"):
        denoise(s.noisy, tile=None, invert=True)


def test_a_large_image_tiled_equals_the_whole_image_within_one_percent():
    from napari_emdenoise.inference import DEFAULT_MODEL

    sim = simulate(size=(1536, 1536), period=14, dose=3, dents=2, dent_depth=0.35, seed=31)
    net = load_generator(DEFAULT_MODEL)
    whole = denoise(sim.noisy, net, tile=None, device="cpu", rescale=False)
    tiled = denoise(sim.noisy, net, tile=512, overlap=64, device="cpu", rescale=False)
    assert np.abs(tiled - whole).max() <= 0.01 * (whole.max() - whole.min())


def test_a_constant_image_comes_back_unchanged_with_a_note():
    flat = np.full((96, 128), 7.0, np.float32)
    flat[3, 4] = np.nan
    with pytest.warns(DenoiseWarning, match="constant .*nothing to denoise"):
        out = denoise(flat)
    assert np.isnan(out[3, 4]) and np.all(out[np.isfinite(out)] == 7.0)
    stack = np.stack([np.full((64, 64), 3, np.uint16), simulate(size=64, period=12, dose=5, seed=1).noisy.astype(np.uint16)])
    with pytest.warns(DenoiseWarning, match=r"\(plane 0\) is constant"):
        out = denoise(stack, tile=None)
    assert np.all(out[0] == 3) and out[1].std() > 0


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 65_537])
def test_percentiles_on_a_device_match_numpy(n):
    """The intensity mapping taken on a GPU (order statistics with torch) is numpy's, to float precision."""
    from napari_emdenoise.inference import _order_percentiles

    values = np.random.default_rng(n).gamma(2.0, 3.0, n).astype(np.float32)
    qs = (0.0, 0.5, 1.0, 50.0, 99.5, 100.0)
    got = _order_percentiles(torch.from_numpy(values), qs)
    np.testing.assert_allclose(got, np.percentile(values, qs), rtol=1e-6, atol=1e-6)



def test_the_whole_image_pass_reports_progress_and_cancels_between_layers(trained_model, dented_image, monkeypatch):
    import napari_emdenoise.inference as inference

    net = load_generator(trained_model)
    monkeypatch.setattr(inference, "PROGRESS_EVERY_S", 0.0)
    events = []
    denoise(dented_image.noisy, net, tile=128, overlap=32, progress=events.append)
    inside = [e for e in events if "whole image" in e.message]
    assert inside and all(0 <= e.done < e.total for e in inside) and events[-1].done == events[-1].total
    stop = threading.Event()

    def on_progress(p):
        if "whole image" in p.message:
            stop.set()  # Cancel pressed during the one long pass

    with pytest.raises(Cancelled):
        denoise(dented_image.noisy, net, tile=128, overlap=32, progress=on_progress, cancel=stop)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert all(m.mode == "instance" for m in tile_norms(net))


def test_passes_reuse_their_thread_also_after_a_cancel(trained_model, dented_image, monkeypatch):
    # torch keeps cuDNN's execution plans per thread: a new thread per pass planned every convolution again (15 of
    # 25 ms per 1024² plane on an H200), so the passes of one process share their threads
    import napari_emdenoise.inference as inference

    net = load_generator(trained_model)
    seen = []
    net.register_forward_pre_hook(lambda m, a: seen.append(threading.current_thread()))
    img = dented_image.noisy
    denoise(np.stack([img, img[::-1]]), net, tile=None)
    assert len(seen) == 2 and seen[0] is seen[1] and seen[0].name == "emdenoise-forward"
    monkeypatch.setattr(inference, "PROGRESS_EVERY_S", 0.0)
    stop = threading.Event()
    with pytest.raises(Cancelled):
        denoise(img, net, tile=None, progress=lambda p: stop.set(), cancel=stop)
    out = denoise(img, net, tile=None)  # the thread that ran the cancelled pass runs the next one
    assert seen[-1] is seen[0] and np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(1, 32, 208, 208), (1, 64, 257, 255), (2, 3, 64, 1024)])
def test_the_chunked_instance_norm_is_instance_norm(shape):
    # what a GPU runs for a few large planes (torch's own kernels work one block per plane there)
    from napari_emdenoise.nets import instance_norm_chunked

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g) * 3 + 5
    x[0, 1] = 7.0  # a constant plane: all zero
    x64 = x.double()
    var, mean = torch.var_mean(x64, dim=(2, 3), keepdim=True, correction=0)
    truth = (x64 - mean) / torch.sqrt(var + 1e-5)
    got = instance_norm_chunked(x, 1e-5)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert (got.double() - truth).abs().max() < 2e-6
    native = torch.nn.functional.instance_norm(x, eps=1e-5)  # (torch's own leaves up to 3e-5 on the constant plane)
    varied = torch.ones(shape[:2], dtype=torch.bool)
    varied[0, 1] = False
    assert (got - native)[varied].abs().max() < 5e-6
    half = instance_norm_chunked(x.half(), 1e-5)
    assert half.dtype == torch.float16 and (half.double() - truth).abs().max() < 0.01


def test_compile_gives_the_same_result_and_falls_back_where_it_cannot(monkeypatch):
    import napari_emdenoise.inference as inference
    from napari_emdenoise import nets

    net = inference.resolve_model(None)
    img = simulate(size=(96, 128), period=10, dose=5, seed=2).noisy
    plain = denoise(img, net)
    fast = denoise(img, net, compile=True)  # compiled by torch (inductor) here
    assert np.abs(fast - plain).max() < 1e-4 * np.ptp(plain)

    def broken(module):  # a machine without a C++ compiler: compiling fails at the first call
        def run(x):
            raise RuntimeError("InductorError: CppCompileError: no C++ compiler found")
        return run

    other = inference.resolve_model(None)
    monkeypatch.setattr(nets, "compiled", broken)
    with pytest.warns(DenoiseWarning, match="could not compile the network here .*RuntimeError.* runs as it is"):
        out = denoise(img, other, compile=True)
    assert np.array_equal(out, plain)
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="compile does not apply to a lazy"):
        denoise(da.from_array(img), net, compile=True)


def test_a_stack_too_large_to_stay_on_the_device_is_uploaded_again_with_the_same_result(monkeypatch):
    import napari_emdenoise.inference as inference

    net = inference.resolve_model(None)
    stack = np.stack([simulate(size=(64, 80), period=p, dose=5, seed=p).noisy for p in (8, 30, 12)]).astype(np.float32)
    stack[0, 5:9, 10:20] = np.nan
    stack[2] = 3.0  # a constant plane
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenoiseWarning)
        kept = denoise(stack, net)
        monkeypatch.setattr(inference, "KEEP_SHARE", 0.0)  # planned, then each plane uploaded again for its pass
        again = denoise(stack, net)
    assert np.array_equal(kept, again, equal_nan=True)
    assert np.isnan(again[0, 5:9, 10:20]).all() and np.all(again[2] == 3.0)


def test_a_plane_without_finite_pixels_comes_back_nan_and_the_others_are_denoised():
    net = None  # the bundled default
    a = simulate(size=(64, 64), period=10, dose=5, seed=3).noisy.astype(np.float32)
    alone = denoise(a, net)
    stack = np.stack([a, np.full_like(a, np.nan), a])
    with pytest.warns(DenoiseWarning, match="plane 1 has no finite pixels"):
        out = denoise(stack, net)
    assert np.isnan(out[1]).all() and np.array_equal(out[0], alone) and np.array_equal(out[2], alone)
    with pytest.raises(ValueError, match="period must be a number"):
        denoise(a, net, period=True)
    with pytest.raises(ValueError, match="whole numbers of px"):
        denoise(a, net, tile=128.5)


def test_a_read_only_input_is_denoised_without_torch_s_warning():
    a = simulate(size=(64, 64), period=10, dose=5, seed=3).noisy.astype(np.float32)
    a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", DenoiseWarning)
        out = denoise(a)
    assert out.shape == a.shape and not a.flags.writeable


def test_a_stack_s_planes_through_the_staged_copy_back_land_in_their_places(monkeypatch):
    """On CUDA a stack's results go out through two pinned buffers and land two planes late (devices.Downloader); the
    same bookkeeping, forced here on the CPU, must put every plane in its place, the last two included."""
    import napari_emdenoise.inference as inference
    from napari_emdenoise.devices import Downloader

    stack = np.stack([simulate(size=(48, 64), period=p, dose=5, seed=p).noisy for p in (8, 9, 10, 11, 12)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenoiseWarning)
        direct = denoise(stack, None)
        monkeypatch.setattr(inference, "Downloader", lambda out, dev: Downloader(out, dev, staged=True))
        staged = denoise(stack, None)
    assert np.array_equal(direct, staged)
    assert len({float(p.mean()) for p in staged}) == 5  # five different planes, none written twice


def test_a_saturated_detector_is_noticed():
    sim = simulate(size=(96, 96), period=12, dose=6, seed=4)
    data = np.minimum(sim.noisy * 3000.0, 65535).astype(np.uint16)  # the brightest columns clipped at the ceiling
    share = float((data == 65535).mean())
    assert 0.01 < share < 0.2
    with pytest.warns(DenoiseWarning, match=r"read 65535, the most a uint16 pixel holds: the detector saturated"):
        denoise(data, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DenoiseWarning)
        denoise((sim.noisy * 100).astype(np.uint16), None, period=12)  # far from the ceiling: no word


def test_the_bundled_model_leaves_the_left_edge_as_the_data_show():
    """The first columns of an image used to meet the downsampling convolutions' zero padding (top/left only) and
    came out brighter than the data: 35 of 37 flagged regions of this image lay in its first 6 columns, none in its
    last 6."""
    from scipy import ndimage

    from napari_emdenoise.consistency import check

    r = simulate(size=1024, period=8, lattice="hexagonal", seed=2)
    k = check(r.noisy, denoise(r.noisy))
    lab, n = ndimage.label(k.flagged)
    cols = [c for _, c in ndimage.center_of_mass(k.flagged, lab, range(1, n + 1))]
    assert sum(c < 6 for c in cols) <= 2
    assert n <= 3


def test_a_period_given_far_from_the_one_the_image_shows_gets_a_note():
    """--period 3 on a 12 px lattice resampled the image 1.5x up without a word (29.4 against 34.8 dB)."""
    img = simulate(size=192, period=12, dose=6, seed=4).noisy
    with pytest.warns(DenoiseWarning, match=r"the period given, 3 px, is 0.25 times the one the image shows \(12"):
        denoise(img, period=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        denoise(img, period=11)  # close to the estimate
        denoise(img, period=40, rescale=False)  # not resampled: nothing to say
    assert not any("the period given" in str(w.message) for w in caught)
