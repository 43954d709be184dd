"""Choosing the checkpoint a run ends with, from the user's own noisy frames (no ground truth needed).

Noise2Self (Batson & Royer, ICML 2019) shows that for a denoiser made blind to a set J of pixels,
the mean squared difference between its output on J and the *noisy* values on J equals its error
against the unknown clean image plus the noise variance, a constant. So it ranks denoisers as the
true error would. Any denoiser f becomes blind to J by replacing the pixels of J with values from
elsewhere before calling it. Here J is a 4x4 grid phase. Each pixel of J and its two neighbours on
each side along the fast scan axis take the mean of the pixels two rows above and below, so noise
shared along a scan line cannot reach the output. The output is matched to the data by least
squares (a CycleGAN's output is in the targets' intensities). The score is the mean over four phases
and fixed crops of the frames.

The run scores the starting model (iteration 0: the bundled model when fine-tuning) and every
checkpoint (in mode n2v the checkpoints only: the score of a network that sees each pixel, made
blind for scoring, is worse than its true error, so it cannot be compared with blind-spot
networks), keeps the best weights in ``best.safetensors`` and their record in ``selection.json``,
and at the end writes the best into ``denoiser.safetensors``. A run that only made the model worse
ends with the model it started from, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

PHASES = ((0, 0), (2, 2), (1, 3), (3, 1))  # of a 4x4 grid: a quarter of the pixels, spread evenly
CROPS = 8
SELECTION = "selection.json"
BEST = "best.safetensors"


def validation_crops(images: list[np.ndarray], crop: int, seed: int = 12345) -> torch.Tensor:
    """Up to CROPS fixed crops (N, 1, crop, crop) from the normalised noisy frames, spread over the frames."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(CROPS):
        img = images[k % len(images)]
        c = min(crop, img.shape[0], img.shape[1]) // 4 * 4
        r0 = int(rng.integers(0, img.shape[0] - c + 1))
        c0 = int(rng.integers(0, img.shape[1] - c + 1))
        out.append(img[r0 : r0 + c, c0 : c0 + c])
    side = min(o.shape[0] for o in out)
    return torch.from_numpy(np.stack([o[:side, :side] for o in out])[:, None].astype(np.float32))


def blinded(x: torch.Tensor, phase: tuple[int, int], span: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(input blind to the phase's pixels, mask of those pixels) for a batch (N, 1, H, W)."""
    n, _, h, w = x.shape
    mask = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    mask[phase[0] :: 4, phase[1] :: 4] = True
    hidden = mask.clone()
    for s in range(1, span + 1):  # the scan-line neighbours share row noise with the pixel
        hidden[:, s:] |= mask[:, :-s]
        hidden[:, :-s] |= mask[:, s:]
    pad = nn.functional.pad(x, (0, 0, 2, 2), mode="reflect")
    vertical = 0.5 * (pad[:, :, :-4] + pad[:, :, 4:])  # mean of the pixels two rows above and below
    return torch.where(hidden, vertical, x), mask


@torch.no_grad()
def blind_score(net: nn.Module, crops: torch.Tensor, device) -> float:
    """Mean squared difference on the blind pixels between the (least-squares matched) output and the noisy data."""
    was_training = net.training
    net.eval()
    try:
        x = crops.to(device)
        errs = []
        for phase in PHASES:
            x_in, mask = blinded(x, phase)
            y = net(x_in).float()
            if y.shape[1] != 1:
                y = y.mean(dim=1, keepdim=True)
            yv, xv = y[..., mask], x[..., mask]
            yc = yv - yv.mean()
            a = (yc * (xv - xv.mean())).sum() / (yc * yc).sum().clamp_min(1e-12)
            b = xv.mean() - a * yv.mean()
            errs.append(float(((a * yv + b - xv) ** 2).mean()))
        return float(np.mean(errs))
    finally:
        net.train(was_training)


class Selector:
    """Scores the generator at iteration 0 and at each checkpoint; keeps the best (see the module docstring)."""

    def __init__(self, run_dir: Path, images: list[np.ndarray], crop: int, device):
        self.run_dir = Path(run_dir)
        self.crops = validation_crops(images, crop)
        self.device = device
        path = self.run_dir / SELECTION
        self.record = json.loads(path.read_text()) if path.is_file() else {"scores": {}, "best": None}

    @property
    def best(self) -> int | None:
        return self.record["best"]

    def consider(self, net: nn.Module, iteration: int, info) -> float:
        from .checkpoints import save_generator
        from .io import atomic_write

        score = blind_score(net, self.crops, self.device)
        self.record["scores"][str(iteration)] = score
        best = self.record["best"]
        if best is None or score < self.record["scores"][str(best)]:
            self.record["best"] = iteration
            save_generator(self.run_dir / BEST, net, info)
        text = json.dumps(self.record, indent=1) + "\n"
        atomic_write(self.run_dir / SELECTION, lambda tmp: Path(tmp).write_text(text))
        return score

    def finish(self, final_iteration: int) -> str | None:
        """Put the best checkpoint in denoiser.safetensors; returns a note for the user when it is not the last one."""
        best = self.record["best"]
        if best is None or best == final_iteration or not (self.run_dir / BEST).is_file():
            return None
        import shutil

        shutil.copyfile(self.run_dir / BEST, self.run_dir / "denoiser.safetensors")
        s = self.record["scores"]
        if best == 0:
            return (f"training did not improve on the starting model on your frames (self-supervised score "
                    f"{s['0']:.4g} at the start, {s[str(final_iteration)]:.4g} at the end; lower is better): "
                    "denoiser.safetensors is the starting model")
        return (f"the checkpoint of iteration {best} scored best on your frames (self-supervised score {s[str(best)]:.4g}, "
                f"{s[str(final_iteration)]:.4g} at the end): denoiser.safetensors holds it")
