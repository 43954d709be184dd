"""The ``emdenoise`` command: every flow of the plugin, scriptable.

Each subcommand lives in a ``_cmd_<name>`` function next to its ``_add_<name>`` parser.
Errors the user can fix end with one line on stderr and exit code 2; a batch where
some files failed exits 1 after processing the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .io import ImageFileError, expand_tiffs, is_tiff_path, read_tiff, write_tiff
from .simulate import LATTICES, SimParams, simulate


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def _pair(text: str) -> tuple[float, float]:
    parts = text.replace("x", ",").split(",")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like '3,-2', got {text!r}") from None
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers like '3,-2', got {text!r}")
    return vals[0], vals[1]


def _size(text: str) -> tuple[int, int]:
    h, w = _pair(text)
    if h != int(h) or w != int(w) or h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be whole pixels, at least 8, like 512 or 512x768; got {text!r}")
    return int(h), int(w)


def _basis(text: str) -> tuple[tuple[float, float, float], ...]:
    out = []
    for item in text.split(";"):
        try:
            u, v, z = (float(x) for x in item.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"basis items are 'u,v,Z' separated by ';', like '0,0,42;0.5,0.5,8'; got {item!r}"
            ) from None
        out.append((u, v, z))
    return tuple(out)


# --------------------------------------------------------------------------- mask
def _add_mask(sub: argparse._SubParsersAction) -> None:
    from .masks import PRESETS, VARIANTS

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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

    from .masks import PRESETS, MaskError, dent_mask, resolve_params

    chosen = {k: getattr(args, k) for k in ("window", "threshold", "sigma", "variant", "radius") if getattr(args, k) is not None}
    params = replace(PRESETS[args.preset], **chosen)
    single = is_tiff_path(args.out)
    if single and len(args.inputs) != 1:
        raise UsageError("-o is a .tif file but there are several inputs; give a folder")
    failed = 0
    for path in args.inputs:
        target = args.out if single else args.out / f"{path.stem}_mask.tif"
        try:
            img = read_tiff(path)
            data = img.data if img.data.ndim == 2 else img.data.reshape(-1, *img.data.shape[-2:])[0]
            used = resolve_params(data, params)
            mask = dent_mask(data, used)
            write_tiff(target, mask, pixel_size=img.pixel_size, overwrite=args.overwrite,
                       description={"source": str(path), "mask_params": used.to_dict()})
            area = float((mask > 0).mean())
            print(f"{path.name} -> {target} (window {used.window}, threshold {used.threshold:g}, sigma {used.sigma:g}, "
                  f"{used.variant}; {100 * area:.1f}% of the image)")
        except (ImageFileError, MaskError, FileExistsError, ValueError) as exc:
            failed += 1
            print(f"{path.name}: error: {exc}", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- synth
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    from tqdm import tqdm

    from .dataset import DatasetError, TargetSpec, build_targets, parse_zoom

    try:
        zooms = [parse_zoom(z) for z in args.zoom]
        masks = {p.stem: read_tiff(p).data.astype(np.float32) for p in expand_tiffs(args.masks)}
        noisy = {p.stem: read_tiff(p).data for p in expand_tiffs(args.noisy)}
        if args.simulate:
            lattice = simulate(size=(1024, 1024), period=args.sim_period, dents=0, dose=1000.0, seed=args.seed).clean
            period = args.sim_period
        else:
            lattice, period = read_tiff(args.lattice).data, args.lattice_period
        spec = TargetSpec(zooms=zooms, per_mask=args.per_mask, rotate=args.rotate, dent_depth=args.dent_depth,
                          seed=args.seed, lattice_period=period)
        with tqdm(total=len(zooms) * len(masks) * args.per_mask, desc="targets", unit="img", disable=None) as bar:
            files = build_targets(lattice, masks, spec, args.out, noisy=noisy, overwrite=args.overwrite,
                                  progress=lambda n, total: bar.update(n - bar.n))
    except (DatasetError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {len(files)} files and manifest.csv/json to {args.out}")
    return 0


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a denoiser (CycleGAN on unpaired images, or paired on simulated pairs)",
        description=(
            "Train a generator from noisy images (--noisy, domain A) to clean targets (--clean, domain B). "
            "cyclegan: unpaired, the reference CycleGAN method (targets from 'emdenoise synth'). paired: "
            "supervised on pairs with the same file names (from 'emdenoise simulate'). Writes RUN_DIR/denoiser.safetensors "
            "(for 'emdenoise denoise --model'), latest_net_G_A.pth etc. (reference naming), checkpoint.pt (full state), "
            "loss_log.csv and loss.png. Ctrl-C stops after the current iteration and saves a checkpoint; --resume continues."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--noisy", nargs="+", type=Path, help="noisy TIFFs or folders (domain A)")
    p.add_argument("--clean", nargs="+", type=Path, help="clean target TIFFs or folders (domain B)")
    p.add_argument("-o", "--out", required=True, type=Path, help="run folder")
    p.add_argument("--mode", choices=["cyclegan", "paired"], default="cyclegan", help="training method")
    p.add_argument("--model", choices=["small", "reference"], default="small",
                   help="small: resnet_6blocks ngf 16 for a CPU; reference: resnet_9blocks ngf 64 for a GPU")
    p.add_argument("--ngf", type=int, default=None, help="generator width (filters of its first layer; default: the preset's)")
    p.add_argument("--iters", type=int, default=2000, help="iterations")
    p.add_argument("--crop", type=int, default=None, help="crop size in px (default: the model preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per iteration (default: the model preset's)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (constant, then linear decay to 0)")
    p.add_argument("--period", type=float, default=None, help="px per lattice period to train at (default: median of the noisy images)")
    p.add_argument("--no-rescale", action="store_true",
                   help="train on every image at its own scale (data spanning the periods to work at, e.g. from 'emdenoise scenes'); "
                        "the model records the range and denoise resamples only images outside it")
    p.add_argument("--period-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="with --no-rescale: the period range (px) to record (default: 5th-95th percentile of the noisy images' periods)")
    p.add_argument("--final", choices=["tanh", "linear"], default="tanh",
                   help="the generator's last activation: tanh (reference, output within the input's 0.5-99.5 %% range) or linear "
                        "(room for dopants and particles brighter than the range)")
    p.add_argument("--residual", action="store_true", help="the generator adds its output to its input (learns the correction)")
    p.add_argument("--clip", type=float, default=3.0,
                   help="normalised input is clipped to +-CLIP (hot pixels); 3 clips heavy dopants, 8 keeps them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: mixed precision (autocast) on GPUs with bfloat16 units; fp32 everywhere else")
    p.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and data on a CPU: same weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from its last checkpoint")
    p.set_defaults(func=_cmd_train)


@contextlib.contextmanager
def _stop_on_interrupt(what: str):
    """The first Ctrl-C (SIGINT) or SIGTERM only sets the yielded event, so long work can stop at a consistent point;
    a second one raises KeyboardInterrupt as usual."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\n{name}: {what} (Ctrl-C again to quit at once)", file=sys.stderr)

    signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield stop
        return
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _read_folder_images(paths: list[Path], what: str) -> tuple[list[np.ndarray], list[str]]:
    files = expand_tiffs(paths)
    if not files:
        raise UsageError(f"no {what} images given")
    images, names = [], []
    for f in files:
        img = read_tiff(f).data
        images.append(img.astype(np.float32))
        names.append(f.name)
    return images, names


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from .train import CONFIG, PRESETS, STATE, TrainConfig, TrainingError, load_run_config, train

    if not args.noisy or not args.clean:
        raise UsageError("--noisy and --clean are both needed (also with --resume)")
    noisy, noisy_names = _read_folder_images(args.noisy, "noisy")
    clean, clean_names = _read_folder_images(args.clean, "clean")
    try:
        if args.resume:
            cfg = load_run_config(args.out)
        else:
            if (args.out / CONFIG).exists():
                raise UsageError(f"'{args.out}' already holds a run; use --resume to continue it or another -o")
            overrides = {k: v for k, v in (("crop", args.crop), ("batch_size", args.batch_size)) if v is not None}
            gen_cfg = PRESETS[args.model]["generator"]
            overrides["generator"] = replace(gen_cfg, ngf=args.ngf or gen_cfg.ngf, final=args.final, residual=args.residual)
            if args.period_range and not args.no_rescale:
                raise UsageError("--period-range goes with --no-rescale")
            cfg = TrainConfig.from_preset(args.model, mode=args.mode, iterations=args.iters, lr=args.lr, period=args.period,
                                          device=args.device, checkpoint_every=args.checkpoint_every, seed=args.seed,
                                          precision=args.precision, rescale=not args.no_rescale, clip=args.clip,
                                          period_range=tuple(args.period_range) if args.period_range else None, **overrides)
        if cfg.mode == "paired":
            by_name = dict(zip(clean_names, clean))
            missing = [n for n in noisy_names if n not in by_name]
            if missing:
                raise UsageError(f"paired mode pairs files by name; no clean file for {missing[:3]}")
            clean, clean_names = [by_name[n] for n in noisy_names], list(noisy_names)
        gen = train(noisy, clean, args.out, None if args.resume else cfg, noisy_names=noisy_names,
                    clean_names=clean_names, resume=args.resume)
        bar = tqdm(total=cfg.iterations, desc=f"train {cfg.mode}", unit="it", disable=None)
        with _stop_on_interrupt("training stops after this iteration and saves a checkpoint") as stop:
            try:
                for event in gen:
                    if bar.n == 0:
                        bar.n = event.iteration - 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in list(event.losses.items())[:4]}, refresh=False)
                    if stop.is_set():  # closing at a yield ends a complete iteration: the generator saves it
                        gen.close()
                        break
            except KeyboardInterrupt:  # a second Ctrl-C: quit now; the last complete checkpoint stays as it was
                bar.close()
                print(f"stopped at once; {args.out} keeps its last checkpoint, if any", file=sys.stderr)
                return 130
        bar.close()
        if stop.is_set():
            if (args.out / STATE).is_file():
                print(f"stopped; checkpoint saved in {args.out} (continue with --resume)", file=sys.stderr)
            else:
                print("stopped before the first iteration; nothing was saved", file=sys.stderr)
            return 130
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    print(f"done: {args.out / 'denoiser.safetensors'} (denoise with: emdenoise denoise IN -o OUT --model "
          f"{args.out / 'denoiser.safetensors'})")
    return 0


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a noisy dented image, denoise it, and show the result with its scores",
        description=(
            "On a fresh install with no data: simulate a noisy 512x512 STEM ADF image with a dent, denoise it with "
            "the bundled default model (or --model), and write input.tif, output.tif, truth.tif, scores.json and "
            "demo.png (input, output and truth side by side with the scores) to a new folder, whose name it prints."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: a new ./emdenoise-demo[-N])")
    p.add_argument("--model", type=Path, default=None, help="checkpoint to use instead of the bundled default")
    p.add_argument("--period", type=float, default=14.0, help="lattice period of the simulated image in px")
    p.add_argument("--dose", type=float, default=4.0, help="mean electron counts per px")
    p.add_argument("--seed", type=int, default=2026, help="seed of the simulated image")
    p.set_defaults(func=_cmd_demo)


def _new_folder(base: Path) -> Path:
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .bench import side_by_side
    from .checkpoints import CheckpointError
    from .inference import denoise, resolve_model
    from .metrics import score

    try:
        net = resolve_model(args.model)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    out = args.out if args.out is not None else _new_folder(Path.cwd() / "emdenoise-demo")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"'{out}' is not empty; choose a new folder")
    sim = simulate(size=(512, 512), period=args.period, dose=args.dose, dents=1, dent_depth=0.4, row_offset=0.3,
                   seed=args.seed)
    t0 = time.perf_counter()
    with _notes() as caught:
        result = denoise(sim.noisy, net, tile=512, overlap=64)
    seconds = time.perf_counter() - t0
    _print_notes(caught, "demo")
    before = score(sim.noisy, sim.clean, sim.dent, args.period)
    after = score(result, sim.clean, sim.dent, args.period)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("input", sim.noisy), ("output", result), ("truth", sim.clean)):
        write_tiff(out / f"{name}.tif", arr)
    report = {"input": before.to_dict(), "output": after.to_dict(), "seconds": seconds,
              "image": {"size": [512, 512], "period_px": args.period, "dose": args.dose, "seed": args.seed}}
    (out / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    crop = (slice(128, 384), slice(96, 352))
    side_by_side([
        (f"noisy input: PSNR {before.psnr:.1f} dB, SSIM {before.ssim:.2f}", sim.noisy[crop]),
        (f"denoised: PSNR {after.psnr:.1f} dB, SSIM {after.ssim:.2f}, F1 {after.f1:.3f}", result[crop]),
        ("truth", sim.clean[crop]),
    ], out / "demo.png")
    print(f"demo written to {out}")
    print(f"  input : PSNR {before.psnr:5.1f} dB  SSIM {before.ssim:.3f}  column F1 {before.f1:.3f}")
    print(f"  output: PSNR {after.psnr:5.1f} dB  SSIM {after.ssim:.3f}  column F1 {after.f1:.3f}  "
          f"position RMS {after.rms_px:.2f} px  dent error {after.dent_error:.3f}  ({seconds:.1f} s)")
    print(f"  look at it: napari {out / 'input.tif'} {out / 'output.tif'} {out / 'truth.tif'}")
    return 0


# --------------------------------------------------------------------------- bench
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    from tqdm import tqdm

    from . import fidelity
    from .checkpoints import CheckpointError

    methods = fidelity.classical_methods()
    try:
        methods["model"] = fidelity.model_method(None)
        for path in args.extra:
            methods[path.stem] = fidelity.model_method(path)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    n = len(fidelity.QUICK if args.quick else fidelity.SUITE) * len(methods)
    with tqdm(total=n, desc="fidelity", unit="run", disable=None, leave=False) as bar:
        run = fidelity.run_fidelity(methods, args.quick, progress=lambda *_: bar.update())
    print(fidelity.markdown_table(fidelity.write_report(run, out)))
    print(f"written to {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import available_methods, markdown_table, run_bench, side_by_side, summary, write_csv

    out = args.out if args.out is not None else _new_folder(Path.cwd() / "emdenoise-bench")
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file, not a folder: name a folder for the results")
    if "bm3d" not in available_methods():
        print("note: BM3D is skipped: pip install bm3d to include it", file=sys.stderr)
    if args.fidelity:
        return _cmd_fidelity(args, out)
    try:
        rows, figure = run_bench(args.quick, {p.stem: p for p in args.extra})
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


# --------------------------------------------------------------------------- simulate
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--n", type=int, default=8, help="number of images")
    p.add_argument("--size", type=_size, default=d.size, help="image size in px: N or HxW")
    p.add_argument("--lattice", choices=LATTICES, default=d.lattice, help="lattice type")
    p.add_argument("--period", type=float, default=d.period, help="lattice period in px (the zoom level)")
    p.add_argument("--aspect", type=float, default=d.aspect, help="second/first period ratio (rectangular lattice)")
    p.add_argument("--angle", type=float, default=d.angle, help="lattice rotation in degrees")
    p.add_argument(
        "--basis", type=_basis, default=d.basis,
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
    p.add_argument("--drift", type=_pair, default=d.drift, help="linear drift 'dy,dx' in px over the frame")
    p.add_argument("--pixel-size", type=float, default=None, help="pixel size in nm written to the TIFFs")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    p.add_argument("--prefix", default="sim", help="file names are PREFIX_NNNN.tif (distinct prefixes let sets share a folder)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    out: Path = args.out
    names = [f"{args.prefix}_{i:04d}" for i in range(args.n)]
    meta_path = out / f"{args.prefix}.json" if args.prefix != "sim" else out / "simulate.json"
    targets = [out / sub / f"{n}.tif" for n in names for sub in ("noisy", "clean", "dent")] + [meta_path]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"{len(existing)} output file(s) exist already (e.g. '{existing[0]}'); use --overwrite or another -o")
    base = dict(
        size=args.size, lattice=args.lattice, period=args.period, aspect=args.aspect, angle=args.angle,
        basis=args.basis, column_width=args.column_width, background=args.background, dents=args.dents,
        dent_depth=args.dent_depth, dent_radius=args.dent_radius, dose=args.dose, read_noise=args.read_noise,
        row_offset=args.row_offset, jitter=args.jitter, drift=args.drift,
    )
    try:
        SimParams(**base, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    records = []
    for i, name in enumerate(tqdm(names, desc="simulate", unit="img", disable=None)):
        sim = simulate(SimParams(**base, seed=args.seed + i))
        for sub, arr in (("noisy", sim.noisy), ("clean", sim.clean), ("dent", sim.dent)):
            write_tiff(out / sub / f"{name}.tif", arr, pixel_size=args.pixel_size, overwrite=True)
        pos_path = out / "positions" / f"{name}.csv"
        pos_path.parent.mkdir(parents=True, exist_ok=True)
        rows = np.column_stack([sim.positions, sim.species])
        np.savetxt(pos_path, rows, delimiter=",", fmt="%.4f", header="row,col,Z", comments="")
        records.append({"name": name, "seed": args.seed + i, "n_columns": int(len(sim.positions))})
    meta = {
        "generator": f"napari-emdenoise {__version__} simulate",
        "params": {k: v for k, v in SimParams(**base, seed=args.seed).to_dict().items() if k != "seed"},
        "pixel_size_nm": args.pixel_size,
        "images": records,
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.n} noisy/clean pairs to {out}")
    return 0


# --------------------------------------------------------------------------- scenes
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--n", type=int, default=100, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene i uses seed + i)")
    p.add_argument("--size", type=int, default=384, help="scene side in px")
    p.add_argument("--period-range", type=float, nargs=2, default=(6.0, 24.0), metavar=("LOW", "HIGH"), help="lattice periods, px")
    p.add_argument("--dose-range", type=float, nargs=2, default=(0.8, 40.0), metavar=("LOW", "HIGH"), help="counts per px")
    p.add_argument("--jobs", type=int, default=1, help="scenes simulated at a time (processes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in OUT")
    p.set_defaults(func=_cmd_scenes)


def _cmd_scenes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ._drive import drive
    from .scenes import write_training_set

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.seed < 0:
        raise UsageError(f"--seed must not be negative, got {args.seed}")
    done = 0
    try:
        gen = write_training_set(args.out, args.n, args.seed, size=args.size, periods=tuple(args.period_range),
                                 doses=tuple(args.dose_range), jobs=args.jobs, overwrite=args.overwrite)
        with tqdm(total=args.n, desc="scenes", unit="img", disable=None) as bar:
            def step(n: int) -> None:
                nonlocal done
                done = n
                bar.update(n - bar.n)

            meta = drive(gen, step)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"stopped: '{args.out}' holds a partial set ({done} of {args.n} pairs, no scenes.json); "
              "run again with --overwrite to replace it", file=sys.stderr)
        return 130
    print(f"wrote {args.n} noisy/clean scene pairs to {args.out} ({meta.name} lists their parameters)")
    return 0


# --------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe TIFF files, or this installation when no file is given",
        description=(
            "Print shape, dtype, pixel size, value range, NaN count and estimated lattice period of each TIFF. "
            "Without files: versions of the package, torch and napari, and the compute devices found."
        ),
    )
    p.add_argument("files", nargs="*", type=Path, help="TIFF files to describe")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(func=_cmd_info)


def _environment() -> dict:
    import platform

    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    try:
        from importlib.metadata import version

        napari_version = version("napari")
    except Exception:
        napari_version = "not installed"
    return {
        "napari-emdenoise": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "napari": napari_version,
        "devices": devices,
    }


def _file_info(path: Path) -> dict:
    img = read_tiff(path)
    data = img.data
    finite = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    vals = data[finite]
    from .lattice import estimate_period

    est = estimate_period(data if data.ndim == 2 else data.reshape(-1, *data.shape[-2:])[0])
    return {
        "file": str(path),
        "shape": list(data.shape),
        "dtype": img.original_dtype,
        "pixel_size_nm": list(img.pixel_size) if img.pixel_size else None,
        "pixel_size_source": img.metadata.get("pixel_size_source"),
        "min": float(vals.min()) if vals.size else None,
        "max": float(vals.max()) if vals.size else None,
        "mean": float(vals.mean()) if vals.size else None,
        "non_finite": int((~finite).sum()),
        "period_px": est.period,
        "notes": img.notes,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    if not args.files:
        env = _environment()
        print(json.dumps(env, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in env.items()))
        return 0
    failed = 0
    results = []
    for path in args.files:
        try:
            results.append(_file_info(path))
        except ImageFileError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            px = "unknown" if r["pixel_size_nm"] is None else " x ".join(f"{v:.5g}" for v in r["pixel_size_nm"]) + " nm"
            period = "no clear lattice" if r["period_px"] is None else f"{r['period_px']:.2f} px"
            print(f"{r['file']}: {' x '.join(map(str, r['shape']))} {r['dtype']}, pixel size {px}, "
                  f"range {r['min']:.6g}..{r['max']:.6g}, mean {r['mean']:.6g}, non-finite {r['non_finite']}, "
                  f"lattice period {period}")
            for note in r["notes"]:
                print(f"  note: {note}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- denoise
@contextlib.contextmanager
def _notes():
    """Collect the core's DenoiseWarnings (rescaling, NaN pixels, memory) to print as one-line notes."""
    import warnings

    from .inference import DenoiseWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DenoiseWarning)
        yield caught


def _print_notes(caught, name: str) -> None:
    from .inference import DenoiseWarning

    for w in caught:
        if issubclass(w.category, DenoiseWarning):
            print(f"{name}: note: {w.message}", file=sys.stderr)


def _add_denoise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "denoise",
        help="denoise TIFF files with a generator",
        description=(
            "Denoise each input TIFF (2D or a stack) and write OUT_DIR/<name>_denoised.tif (float32, the input's "
            "pixel size kept). The image is resampled to the model's training period (estimated from the image "
            "unless --period is given), cut into overlapping tiles that are blended seamlessly, and mapped back. "
            "With --check, each output is also compared with its input (no ground truth needed) and "
            "OUT_DIR/<name>_consistency.tif is written: the float32 z map, the local residual input - output in "
            "units of the noise (positive: the data are brighter, something was erased; negative: the output is "
            "brighter, something was invented; |z| > 4.5 is flagged), with one summary line per file. "
            "A file that fails is reported and the rest continue; the exit code is 1 if any failed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="input TIFF files")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint: a reference *_net_G_A.pth or a .safetensors model (default: the bundled model)")
    p.add_argument("--tile", type=int, default=512, help="tile size in px; 0 runs each image in one pass")
    p.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring tiles in px (at most half the tile)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per batch (default: from the device's memory)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--no-amp", action="store_true", help="full float32 on CUDA instead of mixed precision")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--period", type=float, default=None, help="lattice period of the inputs in px (skips the estimate)")
    scale.add_argument("--no-rescale", action="store_true", help="do not resample to the model's training period")
    p.add_argument("--dtype", choices=["float32", "uint16"], default="float32", help="output sample type")
    p.add_argument("--check", action="store_true",
                   help="check each output against its input: write OUT_DIR/<name>_consistency.tif (z map, float32) "
                        "and print how many regions disagree with the data beyond noise")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_denoise)


def _cmd_denoise(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ._drive import drive
    from .checkpoints import CheckpointError
    from .consistency import ConsistencyError, check
    from .inference import check_period, iter_denoise, resolve_model

    if args.tile < 0 or 0 < args.tile < 16:
        raise UsageError(f"--tile is the tile side in px (at least 16; 0 for the whole image at once), not {args.tile}")
    if (args.tile and args.overlap * 2 > args.tile) or args.overlap < 0:
        raise UsageError(f"--overlap must be between 0 and half of --tile ({args.tile}); got {args.overlap}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size is the number of tiles per batch (at least 1), not {args.batch_size}")
    stems: dict[str, Path] = {}
    for path in args.inputs:
        if path.stem in stems and stems[path.stem] != path:
            raise UsageError(f"'{stems[path.stem]}' and '{path}' would both be written as {path.stem}_denoised.tif in "
                             f"{args.out}; denoise them into different -o folders")
        stems[path.stem] = path
    outs = {(args.out / f"{p.stem}_{kind}.tif").resolve() for p in args.inputs for kind in ("denoised", "consistency")}
    clash = next((p for p in args.inputs if p.resolve() in outs), None)
    if clash is not None:
        raise UsageError(f"writing the results to {args.out} would replace the input '{clash}'; choose another -o")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"-o {args.out} is a file, not a folder: name a folder for the results")
    try:
        check_period(args.period)
    except ValueError as exc:
        raise UsageError(f"--period: {exc}") from None
    try:
        net = resolve_model(args.model)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    failed = 0
    for path in args.inputs:
        target = args.out / f"{path.stem}_denoised.tif"
        cons_target = args.out / f"{path.stem}_consistency.tif"
        try:
            for t in (target, cons_target) if args.check else (target,):
                if t.exists() and not args.overwrite:
                    raise FileExistsError(f"'{t}' exists; use --overwrite to replace it")
            img = read_tiff(path)
            with _notes() as caught:
                gen = iter_denoise(
                    img.data, net, tile=args.tile or None, overlap=args.overlap, batch_size=args.batch_size,
                    device=args.device, period=args.period, rescale=not args.no_rescale, amp=not args.no_amp,
                )
                with tqdm(desc=path.name, unit="tile", disable=None, leave=False) as bar:

                    def show(event):
                        bar.total, bar.n = event.total, event.done
                        bar.refresh()

                    result = drive(gen, show)
            _print_notes(caught, path.name)
            cons, cons_error = None, None
            if args.check:
                try:
                    cons = check(img.data, result)
                except ConsistencyError as exc:  # the denoised output is still written
                    cons_error = exc
            write_tiff(target, result, pixel_size=img.pixel_size, dtype=args.dtype, overwrite=args.overwrite,
                       description={"source": str(path), "model": str(args.model or "bundled default")})
            print(f"{path.name} -> {target}")
            if cons_error is not None:
                raise ConsistencyError(f"consistency check could not run: {cons_error}")
            if cons is not None:
                write_tiff(cons_target, cons.z, pixel_size=img.pixel_size, overwrite=args.overwrite,
                           description={"source": str(path), "denoised": str(target), "consistency": cons.summary()})
                print(f"{path.name}: consistency: {cons.text()}")
        except (ImageFileError, FileExistsError, ValueError, TypeError, MemoryError) as exc:
            failed += 1
            print(f"{path.name}: error: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - anything else one file raises must not end the batch
            failed += 1
            print(f"{path.name}: unexpected error ({type(exc).__name__}): {exc}; the other files go on", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(args.inputs)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emdenoise",
        description="Denoise atomic-resolution STEM images; simulate test data; inspect TIFFs.",
        epilog="Run 'emdenoise COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    _add_bench(sub)
    _add_denoise(sub)
    _add_mask(sub)
    _add_synth(sub)
    _add_train(sub)
    _add_simulate(sub)
    _add_scenes(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ImageFileError, FileExistsError) as exc:
        print(f"emdenoise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emdenoise {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
