"""Speed of the consistency map, check(), on this machine.

    python benchmarks/consistency.py [--size 2048] [--repeat 3]

Prints megapixels per second of ``check(noisy, output)`` on a simulated SrTiO3 scene
(uint16 detector data), with the column scale given and with it estimated from the image,
against the baseline of one scipy Gaussian filter pass over the same float32 image (the
cheapest thing a local statistic could cost), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy import ndimage

from napari_emdenoise import check
from napari_emdenoise.scenes import make_scene


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    s = make_scene(kind="vacancies", size=args.size, period=12, dose=5, seed=1)
    mp = args.size**2 / 1e6
    f32 = s.noisy.astype(np.float32)
    t_gauss = best(lambda: ndimage.gaussian_filter(f32, 1.8), args.repeat)
    t_given = best(lambda: check(s.noisy, s.expected, scale=1.8), args.repeat)
    t_est = best(lambda: check(s.noisy, s.expected), args.repeat)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; image {args.size}² ({mp:.1f} MP)")
    print(f"one Gaussian filter pass (baseline): {t_gauss * 1e3:7.1f} ms  {mp / t_gauss:6.1f} MP/s")
    print(f"check(), scale given:               {t_given * 1e3:7.1f} ms  {mp / t_given:6.1f} MP/s  ({t_given / t_gauss:.1f}x the baseline)")
    print(f"check(), scale estimated:           {t_est * 1e3:7.1f} ms  {mp / t_est:6.1f} MP/s  ({t_est / t_gauss:.1f}x the baseline)")


if __name__ == "__main__":
    main()
