"""The CUDA path gives the CPU's result (skipped where there is no CUDA GPU, e.g. in CI).

Run on a GPU machine with ``python -m pytest tests/test_cuda.py``; benchmarks/gpu_run.sh does.
"""

import numpy as np
import pytest
import torch

from napari_emdenoise import denoise, load_generator
from napari_emdenoise.inference import DEFAULT_MODEL, DenoiseWarning
from napari_emdenoise.simulate import simulate

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore", category=DenoiseWarning),
]


@pytest.fixture(scope="module")
def case():
    sim = simulate(size=(768, 640), period=14, dose=3, dents=1, dent_depth=0.35, seed=31)
    return sim, load_generator(DEFAULT_MODEL)


def _psnr(x, truth):
    return 10 * np.log10((truth.max() - truth.min()) ** 2 / np.mean((x - truth) ** 2))


def _max_rel(a, b):
    return float(np.abs(a - b).max() / (b.max() - b.min()))


def test_cuda_float32_matches_the_cpu(case):
    sim, net = case
    cpu = denoise(sim.noisy, net, device="cpu", tile=256, overlap=64)
    gpu = denoise(sim.noisy, net, device="cuda", tile=256, overlap=64, amp=False)
    print(f"cuda fp32 vs cpu: max diff {_max_rel(gpu, cpu):.2e} of the range; PSNR {_psnr(gpu, sim.clean):.3f} vs {_psnr(cpu, sim.clean):.3f} dB")
    assert _max_rel(gpu, cpu) < 1e-3  # the whole plane on the device: the same result as the CPU's
    assert abs(_psnr(gpu, sim.clean) - _psnr(cpu, sim.clean)) < 0.05


def test_mixed_precision_keeps_the_quality(case):
    sim, net = case
    fp32 = denoise(sim.noisy, net, device="cuda", tile=256, overlap=64, amp=False)
    mixed = denoise(sim.noisy, net, device="cuda", tile=256, overlap=64, amp=True)
    print(f"cuda mixed vs fp32: max diff {_max_rel(mixed, fp32):.2e} of the range; PSNR {_psnr(mixed, sim.clean):.3f} vs {_psnr(fp32, sim.clean):.3f} dB")
    assert np.isfinite(mixed).all()
    assert _max_rel(mixed, fp32) < 0.02
    assert abs(_psnr(mixed, sim.clean) - _psnr(fp32, sim.clean)) < 0.05


def test_cuda_tiles_equal_the_whole_image(case, tiled):
    sim, net = case
    whole = denoise(sim.noisy, net, device="cuda", tile=None, amp=False)
    tiled = denoise(sim.noisy, net, device="cuda", tile=192, overlap=32, amp=False)
    print(f"cuda tiled vs whole: max diff {_max_rel(tiled, whole):.2e} of the range")
    assert _max_rel(tiled, whole) < 0.01


def test_a_stack_with_nan_pixels_on_the_device_matches_the_cpu(case):
    sim, net = case
    stack = np.stack([sim.noisy, sim.noisy[::-1].copy()])
    stack[0, 10:14, 50:90] = np.nan
    cpu = denoise(stack, net, device="cpu")
    gpu = denoise(stack, net, device="cuda", amp=False)
    assert np.array_equal(np.isnan(cpu), np.isnan(gpu))
    finite = np.isfinite(cpu)
    assert np.abs(gpu - cpu)[finite].max() < 1e-3 * np.ptp(cpu[finite])


def test_percentiles_on_the_gpu_match_numpy():
    from napari_emdenoise.inference import _percentiles

    values = np.random.default_rng(0).gamma(2.0, 3.0, (1024, 999)).astype(np.float32)
    got = _percentiles(torch.from_numpy(values).cuda(), (0.5, 99.5))
    np.testing.assert_allclose(got, np.percentile(values, (0.5, 99.5)), rtol=1e-6)


def test_the_period_estimate_resampling_and_uint16_stacks_on_the_device_match_the_cpu(case):
    # the estimate (planes together), the torch resampling and integer planes sent as they are, against the CPU path
    from napari_emdenoise.lattice import estimate_periods

    sim, net = case
    coarse = simulate(size=(512, 512), period=30, dose=4, seed=5).noisy  # outside the bundled range: resampled
    stack = np.stack([coarse, coarse[::-1].copy(), sim.noisy[:512, :512]]).astype(np.uint16)
    cpu_est = estimate_periods(stack)
    gpu_est = estimate_periods(torch.from_numpy(stack.astype(np.float32)).cuda())
    assert [e.period for e in gpu_est] == pytest.approx([e.period for e in cpu_est], rel=1e-6)
    cpu = denoise(stack, net, device="cpu")
    gpu = denoise(stack, net, device="cuda", amp=False)
    assert _max_rel(gpu, cpu) < 1e-3


def test_the_chunked_instance_norm_on_the_device_is_instance_norm():
    # a whole large plane's norms go through torch.batch_norm_stats in chunks (torch's instance norm kernels work one
    # block per plane: 54 % of a 4096² pass on an H200)
    from napari_emdenoise.nets import TileNorm, _few_large_planes

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 32, 520, 520, generator=g) * 3 + 5).cuda()
    assert _few_large_planes(x)
    native = torch.nn.functional.instance_norm(x, eps=1e-5)
    with torch.no_grad():
        got = TileNorm(32)(x)
        half = TileNorm(32)(x.half())
    assert (got - native).abs().max() < 1e-5
    assert half.dtype == torch.float16 and (half.float() - native).abs().max() < 0.01
