"""``emdenoise info``: what a TIFF holds, or what this installation has."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import ImageFileError, read_image

def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe image files (TIFF, DM3/DM4, SER/EMI, EMD), or this installation when no file is given",
        description=(
            "Print shape, dtype, pixel size, value range, NaN count and estimated lattice period of each TIFF. "
            "Without files: versions of the package, torch and napari, and the compute devices found."
        ),
    )
    p.add_argument("files", nargs="*", type=Path, help="image files to describe")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(func=_cmd_info)


def _environment() -> dict:
    import platform

    import torch

    from ..inference import devices

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
        "devices": devices(),
    }


def _file_info(path: Path) -> dict:
    img = read_image(path)
    data = img.data
    finite = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    vals = data[finite]
    from ..lattice import estimate_period

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
            values = ("no finite pixels" if r["min"] is None
                      else f"range {r['min']:.6g}..{r['max']:.6g}, mean {r['mean']:.6g}")
            print(f"{r['file']}: {' x '.join(map(str, r['shape']))} {r['dtype']}, pixel size {px}, "
                  f"{values}, non-finite {r['non_finite']}, lattice period {period}")
            for note in r["notes"]:
                print(f"  note: {note}")
    return 1 if failed else 0
