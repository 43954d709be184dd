"""The data-consistency term of training: the consistency map's statistic, differentiable.

A denoiser's output must explain the frame it came from within that frame's noise. At the
start of a run each noisy training frame (normalised, at the model's scale) gets its noise
model from :func:`napari_emdenoise.check` against a faithful reference (the bundled model's
output): the Poisson-Gaussian ``var = g * mu + c`` in the frame's normalised units, the
atom-column scale, and the spread of ``z`` that the reference itself leaves (1 for independent
pixel noise; above 1 where resampling or the scan correlated the noise), so the statistic is
calibrated on each frame.

In each step, for each crop ``x`` and the generator's output ``G(x)`` (possibly in the target
domain's intensities): ``mu = a * G(x) + b`` with ``a, b`` the least-squares match of the output
to the crop (not differentiated, as in ``check``); ``r = x - mu`` clipped at ±4 sigma per pixel;
``z = (K * r) / sqrt(K^2 * var) / spread`` (the per-pixel clip acts on the value, not on the gradient) with ``K`` a Gaussian of the column scale; and the loss
is ``mean(relu(|z| - margin)^2)``. Pixel noise (``|z|`` about 1) costs nothing, so the output is
free to be smooth; a deleted dopant, a filled vacancy or a flattened dent stands tens of sigma
out and costs its square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

CLIP = 4.0  # per-pixel residuals clipped at this many sigma, as in check()


@dataclass(frozen=True)
class FrameNoise:
    """One frame's noise model in its normalised units, for the consistency term."""

    gain: float  # var = gain * mu + offset
    offset: float
    scale: float  # atom-column scale, px (Gaussian sigma of the local sum)
    spread: float  # robust std of z between the frame and the faithful reference (>= 1)


def frame_noise(x: np.ndarray, reference: np.ndarray) -> FrameNoise:
    """The noise model of the normalised frame ``x`` from ``check(x, reference)``, ``reference`` a faithful denoising."""
    from .consistency import ConsistencyError, check, column_scale

    scale = column_scale(x)
    try:
        cons = check(x, reference, scale=scale)
    except ConsistencyError:  # e.g. a frame with no structure: Gaussian noise from the pixel differences
        d = np.diff(x.astype(np.float64), axis=1)
        return FrameNoise(0.0, max(float(np.median(np.abs(d - np.median(d))) * 1.4826) ** 2 / 2.0, 1e-6), scale, 1.0)
    z = cons.z[np.isfinite(cons.z)]
    spread = float(np.median(np.abs(z - np.median(z))) * 1.4826) if z.size else 1.0
    # var of x = g * mu_x + c, with mu_x = slope * reference + intercept already in x's units
    return FrameNoise(float(cons.gain), float(cons.var_offset), float(cons.scale), max(1.0, spread))


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    r = max(1, int(np.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of (N, 1, H, W) with reflected borders."""
    k = _gaussian_kernel(sigma, img.device, img.dtype)
    r = (len(k) - 1) // 2
    r = min(r, img.shape[-1] - 1, img.shape[-2] - 1)
    k = k[(len(k) - 1) // 2 - r : (len(k) - 1) // 2 + r + 1]
    k = k / k.sum()
    x = nn.functional.pad(img, (r, r, 0, 0), mode="reflect")
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = nn.functional.pad(x, (0, 0, r, r), mode="reflect")
    return nn.functional.conv2d(x, k.view(1, 1, -1, 1))


def z_map(x: torch.Tensor, out: torch.Tensor, noise: FrameNoise) -> torch.Tensor:
    """The local standardised residual of one crop (1, 1, H, W) against the output (1, 1, H, W), differentiable in ``out``."""
    xf, of = x.float(), out.float()
    with torch.no_grad():  # the intensity match, as check() makes it: least squares, not a path for the gradient
        ov = of - of.mean()
        var_o = (ov * ov).sum().clamp_min(1e-12)
        a = ((ov * (xf - xf.mean())).sum() / var_o).clamp_min(1e-3)
        b = xf.mean() - a * of.mean()
    mu = a * of + b
    var = (noise.gain * mu.detach() + noise.offset).clamp_min(max(1e-6 * abs(noise.offset), 1e-8))
    sd = var.sqrt()
    r = xf - mu
    # clipped in value (a hot pixel the output rightly removed stays one pixel's worth of z), not in gradient: where the
    # output is most wrong the residual is clipped, and the gradient must still say which way to go
    r = r + (torch.maximum(torch.minimum(r, CLIP * sd), -CLIP * sd) - r).detach()
    s = noise.scale
    num = _smooth(r, s)
    den = _smooth(var, s / np.sqrt(2.0)) / (4.0 * np.pi * s * s)
    return num / den.sqrt() / noise.spread


def consistency_loss(x: torch.Tensor, out: torch.Tensor, noises: list[FrameNoise], margin: float = 3.0) -> torch.Tensor:
    """Mean of ``relu(|z| - margin)^2`` over a batch (N, 1, H, W) of crops, each with its frame's noise model."""
    losses = []
    for i, noise in enumerate(noises):
        z = z_map(x[i : i + 1], out[i : i + 1], noise)
        losses.append(nn.functional.relu(z.abs() - margin).pow(2).mean())
    return torch.stack(losses).mean()
