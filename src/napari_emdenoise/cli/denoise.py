"""``emdenoise denoise`` (a batch of files, optionally checked) and ``emdenoise check`` (any output against its data)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import read_image, write_tiff
from ._common import HelpFormatter, UsageError, check_outputs

def _add_denoise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "denoise",
        help="denoise TIFF, DM3/DM4, SER/EMI or EMD files with a generator",
        description=(
            "Denoise each input TIFF (2D or a stack) and write OUT_DIR/<name>_denoised.tif (float32, the input's "
            "pixel size kept). The image is resampled to the model's training period (estimated from the image "
            "unless --period is given), cut into overlapping tiles that are blended seamlessly, and mapped back. "
            "Each atom column of the result then gets its height from the counts (a least-squares fit per column, so "
            "that no empty site is filled and no column pulled towards its neighbours beyond noise; --no-refit writes "
            "the network's output as it is). "
            "With --check, each output is also compared with its input (no ground truth needed) and "
            "OUT_DIR/<name>_consistency.tif is written: the float32 z map, the local residual input - output in "
            "units of the noise (positive: the data are brighter, something was erased; negative: the output is "
            "brighter, something was invented; |z| > 4.5 is flagged), with one summary line per file. "
            "Inputs above 8192x8192 px and zarr stores (IN.zarr) are read lazily, denoised chunk by chunk and written as "
            "OUT_DIR/<name>_denoised.zarr. Every output appears only when complete: an input whose outputs exist is "
            "skipped (a re-run does only what is missing; --overwrite redoes it), and Ctrl-C leaves complete files only. "
            "A file that fails is reported and the rest continue; the exit code is 1 if any failed."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="input files (TIFF, DM3/DM4, SER/EMI, EMD) or zarr stores")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint: a reference *_net_G_A.pth or a .safetensors model (default: the bundled model)")
    p.add_argument("--tile", type=int, default=512, help="tile size in px for an image too large for one pass in the memory available (with an InstanceNorm "
                        "generator, any image that fits goes whole: exact statistics); 0 runs each image in one pass")
    p.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring tiles in px (at most half the tile)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per batch (default: from the device's memory)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--no-amp", action="store_true", help="full float32 on CUDA instead of mixed precision")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile: on a CPU about twice as fast once compiled, for 10-20 s of "
                        "compiling at each new image size (for many frames of one size; falls back, with a note, where "
                        "compiling fails)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--period", type=float, default=None, help="lattice period of the inputs in px (skips the estimate)")
    scale.add_argument("--no-rescale", action="store_true", help="do not resample to the model's training period")
    p.add_argument("--invert", action="store_true",
                   help="bright-field or ABF images (atom columns darker than the background): denoise them as ADF contrast "
                        "and turn the result back (a note says when an image looks inverted without it)")
    p.add_argument("--no-refit", action="store_true",
                   help="write the network's output as it is, without refitting each atom column's height to the counts "
                        "(by default every column the output shows is refit to the frame by least squares, so that a "
                        "network cannot fill an empty site or pull a column towards its neighbours beyond noise; "
                        "docs/denoise.md)")
    p.add_argument("--dtype", choices=["float32", "uint16"], default="float32", help="output sample type: float32 keeps the values; uint16 maps the result's "
                   "range linearly onto 0-65535 (counts are not kept; the TIFF's Info records the offset and scale "
                   "to convert back: value = offset + scale * pixel)")
    p.add_argument("--check", action="store_true",
                   help="check each output against its input: write OUT_DIR/<name>_consistency.tif (z map, float32) "
                        "and print how many regions disagree with the data beyond noise")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose outputs exist (without it they are skipped as complete)")
    p.add_argument("--cluster", default=None, metavar="local[:N]|tcp://HOST:PORT",
                   help="run on a dask.distributed cluster: 'local:N' starts N single-threaded worker processes here, an "
                        "address attaches to a running scheduler (inputs and outputs must be on a file system the workers "
                        "share); one task per file, the model sent to each worker once, lost workers' files retried")
    p.set_defaults(func=_cmd_denoise)


def _cmd_denoise(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError
    from ..inference import check_period, resolve_model

    if args.tile < 0 or 0 < args.tile < 16:
        raise UsageError(f"--tile is the tile side in px (at least 16; 0 for the whole image at once), not {args.tile}")
    if (args.tile and args.overlap * 2 > args.tile) or args.overlap < 0:
        raise UsageError(f"--overlap must be between 0 and half of --tile ({args.tile}); got {args.overlap}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size is the number of tiles per batch (at least 1), not {args.batch_size}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"-o {args.out} is a file, not a folder: name a folder for the results")
    from ..devices import pick_device

    try:
        pick_device(args.device)  # a device this machine lacks is said once, before any work
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        check_period(args.period)
    except ValueError as exc:
        raise UsageError(f"--period: {exc}") from None
    try:
        net = resolve_model(args.model)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    # before any compute, after the checks that make nothing: no output over an input, no clash, a writable folder
    check_outputs({p: [args.out / f"{p.stem}_{kind}.tif" for kind in ("denoised", "consistency")] for p in args.inputs})
    from ..batch import FileOptions, denoise_file, is_large, outputs_for, remove_partials

    opts = FileOptions(tile=args.tile or None, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                       period=args.period, rescale=not args.no_rescale, amp=not args.no_amp, invert=args.invert,
                       compile=args.compile, dtype=args.dtype, check=args.check, refit=not args.no_refit,
                       overwrite=args.overwrite,
                       model_label=str(args.model or "bundled default"))
    outputs = {p: outputs_for(p, args.out, args.check, is_large(p)) for p in args.inputs}
    targets = [t for ts in outputs.values() for t in ts]
    results, jobs = [], None
    try:
        if args.cluster:
            from ..cluster import ClusterError, denoise_files

            try:
                jobs = denoise_files(args.cluster, args.inputs, args.out, args.model, opts)
                for res in jobs:
                    _report(res)
                    results.append(res)
            except ClusterError as exc:
                raise UsageError(str(exc)) from None
        else:
            from tqdm import tqdm

            for path in args.inputs:
                with tqdm(desc=path.name, unit="tile", disable=None, leave=False) as bar:
                    def show(event, bar=bar) -> None:
                        bar.total, bar.n = event.total, int(event.done)
                        bar.refresh()

                    res = denoise_file(path, args.out, net, opts, progress=show)
                _report(res)
                results.append(res)
    except KeyboardInterrupt:
        if jobs is not None:
            jobs.close()  # cancels what is left and shuts the workers down before anything is counted or cleaned
        done = sum(all(t.exists() for t in ts) for ts in outputs.values())
        print(f"\ninterrupted: {done} of {len(args.inputs)} file(s) complete; no partial output was left (run the same "
              "command again to do the rest)", file=sys.stderr)
        return 130
    finally:
        remove_partials(targets)
    failed = [r for r in results if r.error]
    skipped = sum(r.skipped for r in results)
    if skipped:
        print(f"{skipped} of {len(args.inputs)} file(s) were already complete and skipped", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(args.inputs)} file(s) failed: " + ", ".join(Path(r.source).name for r in failed),
              file=sys.stderr)
    return 1 if failed else 0


def _report(res) -> None:
    for line in res.lines:
        print(line)
    for note in res.notes:
        print(note, file=sys.stderr)
    if res.error:
        print(f"{Path(res.source).name}: error: {res.error}", file=sys.stderr)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a denoised image (from any program) against the data it came from",
        description=(
            "Compare OUTPUT, a denoised image made by any program, with DATA, the recorded image it was made from "
            "(same shape and orientation; no ground truth needed). Prints how many regions disagree with the data "
            "beyond noise and writes the float32 z map (the local residual data - output in units of the noise: "
            "positive where something was erased, negative where something was invented; |z| > THRESHOLD is "
            "flagged) to -o. Exit code 0 whether or not regions are flagged; 2 when the pair cannot be compared."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", type=Path, help="the recorded (noisy) TIFF")
    p.add_argument("output", type=Path, help="the denoised TIFF to check")
    p.add_argument("-o", "--out", type=Path, default=None, help="write the z map to this .tif")
    p.add_argument("--threshold", type=float, default=4.5, help="flag |z| above this many sigma")
    p.add_argument("--scale", type=float, default=None, help="column scale in px (default: from the lattice period)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from ..consistency import ConsistencyError, check

    if args.out is not None:
        if args.out.suffix.lower() not in (".tif", ".tiff"):
            raise UsageError(f"-o {args.out}: the z map is written as a TIFF; name it .tif or .tiff")
        if args.out.resolve() in (args.data.resolve(), args.output.resolve()):
            raise UsageError(f"-o {args.out} would replace an input; name a new file for the z map")
        if args.out.exists() and not args.overwrite:
            raise UsageError(f"'{args.out}' exists; use --overwrite to replace it")
        from ..batch import remove_partials

        remove_partials([args.out])  # what a killed earlier run left half-written
    data, output = read_image(args.data), read_image(args.output)
    try:
        cons = check(data.data, output.data, scale=args.scale, threshold=args.threshold)
    except ConsistencyError as exc:
        raise UsageError(f"cannot check '{args.output.name}' against '{args.data.name}': {exc}") from None
    if args.out is not None:
        write_tiff(args.out, cons.z, pixel_size=data.pixel_size, overwrite=args.overwrite, axes=data.axes,
                   description={"data": str(args.data), "output": str(args.output), "consistency": cons.summary()})
    if args.json:
        print(json.dumps({"data": str(args.data), "output": str(args.output),
                          "z_map": str(args.out) if args.out is not None else None, **cons.summary()}, indent=2))
    else:
        print(f"{args.output.name}: {cons.text()}" + (f" (z map: {args.out})" if args.out is not None else ""))
    return 0
