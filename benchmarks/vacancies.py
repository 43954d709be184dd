"""Empty light-column sites: where does a model fill them, against what the data can show?

    python benchmarks/vacancies.py [--model PATH ...] [--periods 8 10 12 16] [--doses 2 3 5 8 12] [--seeds 2]

SrTiO3 scenes (`make_scene(kind="vacancies")`, O columns at 7 % of Sr, 4 % of the sites of each
column kind empty) over a grid of periods and doses, with seeds from 5000 (neither training's
0-1199 nor the benchmark's 9000 up). Each cell prints the share of empty O sites filled
(`fidelity.measure`'s "vacancy_fill_light") by:

* the ideal observer (`fidelity.ideal_observer`: every position known, each column's weight
  fitted to the frame), what the counts themselves can tell;
* the noisy frame as it is (smoothed as the measure smooths);
* the bundled model, and each `--model` given, each as it is and with its columns refit to the
  frame (`refit_columns`, docs/fidelity.md).

A model whose figure stands far above the ideal observer's draws O columns the data do not show.
"""

from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_emdenoise import fidelity
from napari_emdenoise.scenes import make_scene


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, nargs="*", default=[], help="generators to measure beside the bundled one")
    p.add_argument("--periods", type=float, nargs="+", default=[8, 10, 12, 16])
    p.add_argument("--doses", type=float, nargs="+", default=[2, 3, 5, 8, 12], help="mean counts per px")
    p.add_argument("--seeds", type=int, default=3, help="scenes per cell")
    p.add_argument("--size", type=int, default=384)
    args = p.parse_args(argv)
    methods = {"ideal observer": fidelity.ideal_observer, "noisy": lambda s: s.noisy,
               **fidelity.model_methods("bundled model", None)}
    for m in args.model:
        methods.update(fidelity.model_methods(m.stem, m))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"{args.seeds} scene(s) of {args.size}² per cell; empty O sites filled:")
    print("| period px | dose counts/px | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, period in enumerate(args.periods):
            for j, dose in enumerate(args.doses):
                scenes = [make_scene(kind="vacancies", size=args.size, period=period, dose=dose, seed=5000 + 100 * k + 10 * j + i)
                          for i in range(args.seeds)]
                # scene by scene, so that a refit row reuses its model's output of the same scene
                cells = np.nanmean([[fidelity.measure(s, fn(s))["vacancy_fill_light"] for fn in methods.values()] for s in scenes],
                                   axis=0)
                print(f"| {period:g} | {dose:g} | " + " | ".join(f"{100 * c:.0f} %" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
