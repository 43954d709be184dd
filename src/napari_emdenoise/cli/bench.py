"""``emdenoise demo`` (simulate, denoise, score: a first look) and ``emdenoise bench`` (the quality and fidelity benchmarks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ._common import HelpFormatter, UsageError, new_folder, notes, print_notes, run_job

def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a noisy dented image, denoise it, and show the result with its scores",
        description=(
            "On a fresh install with no data: simulate a noisy 512x512 STEM ADF image with a dent, denoise it with "
            "the bundled default model (or --model), and write input.tif, output.tif, truth.tif, scores.json and "
            "demo.png (input, output and truth side by side with the scores) to a new folder, whose name it prints."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: a new ./emdenoise-demo[-N])")
    p.add_argument("--model", type=Path, default=None, help="checkpoint to use instead of the bundled default")
    p.add_argument("--period", type=float, default=14.0, help="lattice period of the simulated image in px")
    p.add_argument("--dose", type=float, default=4.0, help="mean electron counts per px")
    p.add_argument("--seed", type=int, default=2026, help="seed of the simulated image")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError
    from ..demo import run_demo

    out = args.out if args.out is not None else new_folder(Path.cwd() / "emdenoise-demo")
    try:
        with notes() as caught:
            report = run_demo(out, args.model, period=args.period, dose=args.dose, seed=args.seed)
    except (CheckpointError, FileNotFoundError, FileExistsError) as exc:
        raise UsageError(str(exc)) from None
    print_notes(caught, "demo")
    before, after = report["input"], report["output"]
    print(f"demo written to {out}")
    print(f"  input : PSNR {before['psnr']:5.1f} dB  SSIM {before['ssim']:.3f}  column F1 {before['f1']:.3f}")
    print(f"  output: PSNR {after['psnr']:5.1f} dB  SSIM {after['ssim']:.3f}  column F1 {after['f1']:.3f}  "
          f"position RMS {after['rms_px']:.2f} px  dent error {after['dent_error']:.3f}  ({report['seconds']:.1f} s)")
    print(f"  look at it: napari {out / 'input.tif'} {out / 'output.tif'} {out / 'truth.tif'}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="score the default model against classical denoisers on a simulated suite",
        description=(
            "Denoise a fixed simulated suite (12 images of 384x384 px; --quick: 4 of 256x256) with the noisy input, "
            "a best-sigma Gaussian filter, non-local means, BM3D (if the bm3d package is installed), Fourier "
            "(Bragg) filtering, the bundled model and any --extra checkpoints; print a table and write "
            "OUT/bench.csv, OUT/summary.csv and OUT/bench.png (crops of input, truth and each method)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: a new ./emdenoise-bench[-N])")
    p.add_argument("--quick", action="store_true", help="4 small images instead of 12 (--fidelity: 7 of 256x256)")
    p.add_argument("--extra", nargs="*", type=Path, default=[], help="more checkpoints to score (named by file)")
    p.add_argument("--fidelity", action="store_true",
                   help="the fidelity benchmark instead: 12 specimen scenes (vacancies, dopants, light columns, amorphous "
                        "films, a particle, a grain boundary, a harsh scan) as uint16 detector data; measures what each "
                        "method invented or erased; writes fidelity.csv, fidelity_summary.csv and fidelity.png "
                        "(docs/fidelity.md)")
    p.set_defaults(func=_cmd_bench)


def _cmd_fidelity(args: argparse.Namespace, out: Path) -> int:
    from .. import fidelity
    from ..checkpoints import CheckpointError

    methods = fidelity.classical_methods()
    try:
        methods.update(fidelity.model_methods("model", None))
        for path in args.extra:
            methods.update(fidelity.model_methods(path.stem, path))
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    run = run_job(fidelity.iter_fidelity(methods, args.quick), "fidelity", "run")
    print(fidelity.markdown_table(fidelity.write_report(run, out)))
    print(f"written to {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import available_methods, iter_bench, markdown_table, side_by_side, summary, write_csv

    out = args.out if args.out is not None else new_folder(Path.cwd() / "emdenoise-bench")
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file, not a folder: name a folder for the results")
    if "bm3d" not in available_methods():
        print("note: BM3D is skipped: pip install bm3d to include it", file=sys.stderr)
    if args.fidelity:
        return _cmd_fidelity(args, out)
    try:
        rows, figure = run_job(iter_bench(args.quick, {p.stem: p for p in args.extra}), "bench", "run")
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "bench.csv")
    summ = summary(rows)
    write_csv(summ, out / "summary.csv")
    print(markdown_table(summ))
    if figure is not None:
        sim, outputs = figure
        h, w = sim.noisy.shape
        crop = (slice(h // 4, h // 4 + 128), slice(w // 4, w // 4 + 128))
        panels = [("input", sim.noisy[crop]), ("truth", sim.clean[crop])]
        panels += [(m, np.asarray(o)[crop]) for m, o in outputs.items() if m != "noisy"]
        side_by_side(panels, out / "bench.png")
    print(f"written to {out}")
    return 0
