"""Data commands: ``mask`` (dent masks), ``synth`` (a target set), ``simulate`` (training pairs), ``scenes`` (specimen scenes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..io import ImageFileError, expand_tiffs, is_tiff_path, read_image, read_tiff, write_tiff
from ..simulate import LATTICES, SimParams, simulate
from ._common import HelpFormatter, UsageError, basis, check_outputs, pair, run_job, size

def _add_mask(sub: argparse._SubParsersAction) -> None:
    from ..masks import PRESETS, VARIANTS

    p = sub.add_parser(
        "mask",
        help="make dent masks from noisy images",
        description=(
            "Make a dent mask (float32, 0..255, large where the image is darker) of each input: subtract the mean, "
            "box-smooth, normalise to 0..255, zero what is under the threshold, Gaussian blur, then the optional "
            "min/mean variant. Options left out take the preset's value; the adaptive preset sizes the window "
            "and blur from the lattice period estimated on the image. Writes OUT/<name>_mask.tif, or OUT itself "
            "when it ends in .tif and there is one input."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="noisy TIFF images")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder, or a .tif path for one input")
    p.add_argument("--preset", choices=sorted(PRESETS), default="adaptive", help="starting parameters")
    p.add_argument("--window", type=int, default=None, help="smoothing window in px (adaptive: two periods)")
    p.add_argument("--threshold", type=float, default=None, help="values under this (0..255 scale) become 0")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian blur sigma in px (adaptive: one period)")
    p.add_argument("--variant", choices=VARIANTS, default=None, help="min or mean over a Chebyshev neighbourhood")
    p.add_argument("--radius", type=int, default=None, help="Chebyshev radius of the variant (min 3, mean 5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing masks")
    p.set_defaults(func=_cmd_mask)


def _cmd_mask(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..masks import PRESETS, MaskError, dent_mask, resolve_params

    chosen = {k: getattr(args, k) for k in ("window", "threshold", "sigma", "variant", "radius") if getattr(args, k) is not None}
    params = replace(PRESETS[args.preset], **chosen)
    single = is_tiff_path(args.out)
    if single and len(args.inputs) != 1:
        raise UsageError("-o is a .tif file but there are several inputs; give a folder")
    targets = {path: args.out if single else args.out / f"{path.stem}_mask.tif" for path in args.inputs}
    check_outputs({path: [t] for path, t in targets.items()})
    from ..batch import remove_partials

    remove_partials(list(targets.values()))  # what a killed earlier run left half-written
    failed = 0
    for path, target in targets.items():
        try:
            img = read_image(path)
            for note in img.notes:
                print(f"{path.name}: note: {note}", file=sys.stderr)
            data = img.data if img.data.ndim == 2 else img.data.reshape(-1, *img.data.shape[-2:])[0]
            if img.data.ndim > 2:
                print(f"{path.name}: note: a stack of {img.data.shape[:-2]} planes ({img.axes}); the mask is made from the "
                      "first plane", file=sys.stderr)
            used = resolve_params(data, params)
            mask = dent_mask(data, used)
            write_tiff(target, mask, pixel_size=img.pixel_size, overwrite=args.overwrite,
                       description={"source": str(path), "mask_params": used.to_dict()})
            area = float((mask > 0).mean())
            print(f"{path.name} -> {target} (window {used.window}, threshold {used.threshold:g}, sigma {used.sigma:g}, "
                  f"{used.variant}; {100 * area:.1f}% of the image)")
        except (ImageFileError, MaskError, FileExistsError, ValueError, OSError) as exc:
            failed += 1
            print(f"{path.name}: error: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one file's surprise must not end the batch: said, and the rest go on
            failed += 1
            print(f"{path.name}: error: unexpected error ({type(exc).__name__}): {exc}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(targets)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0



def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="build a training target set from a clean lattice and dent masks",
        description=(
            "Rotate a clean synthetic lattice, tile it, crop per magnification so each crop holds as many lattice "
            "periods as an experimental image (ZOOM given as LABEL=ACROSSxDOWN atoms, LABEL=PERIODpx or "
            "LABEL=example.tif), resample to each mask's size and thin it by the mask. Writes OUT/trainB/*.tif "
            "(targets), OUT/trainA/*.tif (the --noisy images) and OUT/manifest.csv/json."
        ),
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--lattice", type=Path, help="clean synthetic lattice TIFF")
    src.add_argument("--simulate", action="store_true", help="use a simulated clean lattice (see --sim-period)")
    p.add_argument("--sim-period", type=float, default=16.0, help="period in px of the simulated lattice")
    p.add_argument("--masks", required=True, nargs="+", type=Path, help="mask TIFFs, or folders of them")
    p.add_argument("--zoom", required=True, nargs="+", help="magnifications, e.g. 20MX=36x38 10MX=18x19")
    p.add_argument("--per-mask", type=int, default=20, help="targets per mask and zoom")
    p.add_argument("--rotate", type=int, default=0, help="clockwise rotation of the lattice in degrees (multiple of 90)")
    p.add_argument("--dent-depth", type=float, default=0.4, help="relative thickness lost where a mask is 255")
    p.add_argument("--lattice-period", type=float, default=None, help="period of the lattice image in px (default: estimated)")
    p.add_argument("--noisy", nargs="*", type=Path, default=[], help="noisy TIFFs or folders to copy into trainA")
    p.add_argument("--seed", type=int, default=0, help="seed of the crop positions")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target set in OUT")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..dataset import DatasetError, TargetSpec, iter_build_targets, parse_zoom

    try:
        zooms = [parse_zoom(z) for z in args.zoom]
        masks = {p.stem: read_tiff(p).data.astype(np.float32) for p in expand_tiffs(args.masks)}
        noisy = {p.stem: read_image(p).data for p in expand_tiffs(args.noisy)}
        if args.simulate:
            lattice = simulate(size=(1024, 1024), period=args.sim_period, dents=0, dose=1000.0, seed=args.seed).clean
            period = args.sim_period
        else:
            lattice, period = read_tiff(args.lattice).data, args.lattice_period
        spec = TargetSpec(zooms=zooms, per_mask=args.per_mask, rotate=args.rotate, dent_depth=args.dent_depth,
                          seed=args.seed, lattice_period=period)
        files = run_job(iter_build_targets(lattice, masks, spec, args.out, noisy=noisy, overwrite=args.overwrite),
                        "targets", "img")
    except (DatasetError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {len(files)} files and manifest.csv/json to {args.out}")
    return 0



def _add_simulate(sub: argparse._SubParsersAction) -> None:
    d = SimParams()
    p = sub.add_parser(
        "simulate",
        help="write simulated noisy/clean STEM ADF image pairs",
        description=(
            "Simulate STEM ADF images of a crystal lattice with dents, shot noise and scan distortions. "
            "Writes OUT/noisy/sim_NNNN.tif, OUT/clean/sim_NNNN.tif (same geometry, no noise), "
            "OUT/dent/sim_NNNN.tif (dent map, 0..1), OUT/positions/sim_NNNN.csv (true column "
            "positions, row and col in px) and OUT/simulate.json (all parameters and seeds); with "
            "--prefix P the names are P_NNNN and the parameters go to OUT/P.json."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--n", type=int, default=8, help="number of images")
    p.add_argument("--size", type=size, default=d.size, help="image size in px: N or HxW")
    p.add_argument("--lattice", choices=LATTICES, default=d.lattice, help="lattice type")
    p.add_argument("--period", type=float, default=d.period, help="lattice period in px (the zoom level)")
    p.add_argument("--aspect", type=float, default=d.aspect, help="second/first period ratio (rectangular lattice)")
    p.add_argument("--angle", type=float, default=d.angle, help="lattice rotation in degrees")
    p.add_argument(
        "--basis", type=basis, default=d.basis,
        help="columns in the unit cell as 'u,v,Z;...' (fractional position, atomic number; peak ~ Z^1.7)",
    )
    p.add_argument("--column-width", type=float, default=None, help="column Gaussian sigma in px (default 0.13 periods)")
    p.add_argument("--background", type=float, default=d.background, help="background level relative to the brightest column")
    p.add_argument("--dents", type=int, default=d.dents, help="number of dents per image")
    p.add_argument("--dent-depth", type=float, default=d.dent_depth, help="relative thickness lost at a dent's centre (0..1)")
    p.add_argument("--dent-radius", type=float, default=None, help="dent radius in px (default a quarter of the image)")
    p.add_argument("--dose", type=float, default=d.dose, help="mean electron counts per px (Poisson noise)")
    p.add_argument("--read-noise", type=float, default=d.read_noise, help="Gaussian detector noise, std in counts")
    p.add_argument("--row-offset", type=float, default=d.row_offset, help="per-scan-row x offset, std in px")
    p.add_argument("--jitter", type=float, default=d.jitter, help="per-pixel x jitter, std in px")
    p.add_argument("--drift", type=pair, default=d.drift, help="linear drift 'dy,dx' in px over the frame")
    p.add_argument("--pixel-size", type=float, default=None, help="pixel size in nm written to the TIFFs")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    p.add_argument("--prefix", default="sim", help="file names are PREFIX_NNNN.tif (distinct prefixes let sets share a folder)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ..simulate import write_set

    try:
        params = SimParams(
            size=args.size, lattice=args.lattice, period=args.period, aspect=args.aspect, angle=args.angle,
            basis=args.basis, column_width=args.column_width, background=args.background, dents=args.dents,
            dent_depth=args.dent_depth, dent_radius=args.dent_radius, dose=args.dose, read_noise=args.read_noise,
            row_offset=args.row_offset, jitter=args.jitter, drift=args.drift, seed=args.seed,
        )
        run_job(write_set(args.out, args.n, params, prefix=args.prefix, pixel_size=args.pixel_size,
                          overwrite=args.overwrite), "simulate", "img")
    except (ValueError, FileExistsError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.n} noisy/clean pairs to {args.out}")
    return 0


def _add_scenes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scenes",
        help="write a varied training set of specimen scenes (vacancies, dopants, light columns, amorphous, particles...)",
        description=(
            "Draw N specimen scenes (the fidelity benchmark's simulator, every setting varied: kind, period, dose, optics, "
            "scan and detector) and write OUT/noisy/NAME.tif (uint16 detector values), OUT/clean/NAME.tif (the noise-free "
            "truth in the same detector units) and OUT/scenes.json. For 'emdenoise train --mode paired --no-rescale'. "
            "Seeds 9000-9999 belong to the fidelity benchmark and are refused."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--n", type=int, default=100, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene i uses seed + i)")
    p.add_argument("--size", type=int, default=384, help="scene side in px")
    p.add_argument("--period-range", type=float, nargs=2, default=(6.0, 24.0), metavar=("LOW", "HIGH"), help="lattice periods, px")
    p.add_argument("--dose-range", type=float, nargs=2, default=(0.8, 40.0), metavar=("LOW", "HIGH"), help="counts per px")
    p.add_argument("--kinds", nargs="+", default=None, metavar="KIND=SHARE",
                   help="shares of the scene kinds, e.g. 'vacancies=0.2 dopants=0.2 lattice=0.3' (kinds left out get none; "
                        "default: the bundled model's mix, without 'lattice', the perfect crystal)")
    p.add_argument("--jobs", type=int, default=1, help="scenes simulated at a time (processes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in OUT")
    p.set_defaults(func=_cmd_scenes)


def _cmd_scenes(args: argparse.Namespace) -> int:
    from ..scenes import write_training_set

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    kinds = None
    if args.kinds:
        kinds = {}
        for item in args.kinds:
            name, eq, share = item.partition("=")
            try:
                kinds[name] = float(share)
            except ValueError:
                raise UsageError(f"--kinds takes KIND=SHARE pairs such as lattice=0.2, not {item!r}") from None
            if not eq:
                raise UsageError(f"--kinds takes KIND=SHARE pairs such as lattice=0.2, not {item!r}")
    if args.seed < 0:
        raise UsageError(f"--seed must not be negative, got {args.seed}")
    done = 0

    def count(event) -> None:
        nonlocal done
        done = event.done

    try:
        meta = run_job(write_training_set(args.out, args.n, args.seed, size=args.size, periods=tuple(args.period_range),
                                          doses=tuple(args.dose_range), jobs=args.jobs, overwrite=args.overwrite,
                                          kinds=kinds),
                       "scenes", "img", on_event=count)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"stopped: '{args.out}' holds a partial set ({done} of {args.n} pairs, no scenes.json); "
              "run again with --overwrite to replace it", file=sys.stderr)
        return 130
    print(f"wrote {args.n} noisy/clean scene pairs to {args.out} ({meta.name} lists their parameters)")
    return 0
