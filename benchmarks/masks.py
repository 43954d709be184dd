"""Dent-mask quality: IoU of each preset's dent region with the simulator's true dent.

    python benchmarks/masks.py

40 simulated 512² images with one dent of radius 100 px: square and hexagonal lattices,
periods 5-30 px, dent depths 0.2 and 0.4, doses 2 and 10 counts/px. The true dent is where
the simulator's dent map exceeds 0.5; a mask's region is where it reaches half its threshold.
"""

from __future__ import annotations

import numpy as np

from napari_emdenoise.masks import PRESETS, dent_mask, iou, mask_region
from napari_emdenoise.simulate import simulate


def main() -> None:
    cases = [(lat, p, depth, dose) for lat in ("square", "hexagonal") for p in (5, 8, 12, 20, 30)
             for depth in (0.2, 0.4) for dose in (2, 10)]
    sims = [simulate(size=(512, 512), lattice=lat, period=p, dose=dose, dents=1, dent_depth=depth, dent_radius=100,
                     angle=7, seed=p) for lat, p, depth, dose in cases]
    print("| preset | images | IoU min | IoU mean | worst case |")
    print("|---|---|---|---|---|")
    for name, params in PRESETS.items():
        scores = [iou(mask_region(dent_mask(s.noisy, params), params.threshold), s.dent > 0.5) for s in sims]
        worst = cases[int(np.argmin(scores))]
        print(f"| {name} | {len(scores)} | {min(scores):.3f} | {np.mean(scores):.3f} | "
              f"{worst[0]}, period {worst[1]}, depth {worst[2]}, dose {worst[3]} |")


if __name__ == "__main__":
    main()
