"""Scale-out figures: files per second on a local dask.distributed cluster, peak memory of lazy denoising of huge
images, and how soon the first slice of a lazy stack is ready.

    python benchmarks/scale.py                         # all three, 8192^2 only for the memory figure
    python benchmarks/scale.py --sizes 8192 16384      # the issue's sizes (16384^2: about 10 min on 2 cores)
    python benchmarks/scale.py --only files --files 32

Every figure is measured in this run; name the machine with each one you quote. The files are
simulated (512^2 by default) and denoised with the bundled model; the huge images are written as
tiled TIFFs first, then ``emdenoise denoise`` reads them lazily and writes zarr, in a subprocess
whose peak resident memory (ru_maxrss) is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def files_per_second(n: int, size: int, workers: list[int], tmp: Path) -> list[str]:
    from napari_emdenoise.io import write_tiff
    from napari_emdenoise.simulate import simulate

    src = tmp / "in"
    for i in range(n):
        write_tiff(src / f"f{i:03d}.tif", simulate(size=size, period=10, dose=5, seed=i).noisy)
    inputs = sorted(map(str, src.glob("*.tif")))
    rows = []
    base = None
    for w in [0, *workers]:  # 0: in this process, one file after the other (the baseline)
        out = tmp / f"out{w}"
        cmd = [sys.executable, "-m", "napari_emdenoise.cli", "denoise", *inputs, "-o", str(out)]
        if w:
            cmd += ["--cluster", f"local:{w}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rate = n / (time.perf_counter() - t0)
        base = base or rate
        what = "in one process (no cluster)" if w == 0 else f"--cluster local:{w}"
        rows.append(f"| {what} | {n} x {size}² | {rate:.2f} | {rate / base:.2f} |")
    return ["| run | files | files/s (start-up included) | vs one process |", "|---|---|---|---|", *rows]


def peak_memory(sizes: list[int], tmp: Path) -> list[str]:
    import tifffile

    rows = []
    for size in sizes:
        path = tmp / f"big{size}.tif"
        rng = np.random.default_rng(0)
        # a tiled TIFF written band by band: this process never holds the image either
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            def tiles():
                for r in range(0, size, 512):
                    base = rng.poisson(5.0, (512, size)).astype(np.float32)
                    for c in range(0, size, 512):
                        yield base[:, c:c + 512]
            tw.write(tiles(), shape=(size, size), dtype=np.float32, tile=(512, 512))
        out = tmp / f"out{size}"
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run([sys.executable, "-m", "napari_emdenoise.cli", "denoise", str(path), "-o", str(out), "--no-rescale"],
                       check=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak <= before:
            note = " (at most)"
        else:
            note = ""
        mp = size * size / 1e6
        rows.append(f"| {size}² ({mp * 4 / 1e3:.2f} GB as float32) | {peak / 2**20:.2f} GB{note} | {seconds:.0f} s | "
                    f"{mp / seconds:.2f} |")
        path.unlink()
    return ["| image (TIFF in, zarr out) | peak RSS of `emdenoise denoise` | time | MP/s |", "|---|---|---|---|", *rows]


def first_slice(size: int, planes: int) -> list[str]:
    import dask.array as da

    from napari_emdenoise import denoise
    from napari_emdenoise.inference import resolve_model
    from napari_emdenoise.simulate import simulate

    net = resolve_model(None)
    planes_np = [simulate(size=size, period=10, dose=5, seed=s).noisy for s in range(2)]
    stack = da.from_array(np.stack([planes_np[i % 2] for i in range(planes)]), chunks=(1, size, size))  # read instantly
    denoise(planes_np[1][:512, :512], net)  # load and warm up on one tile, as an open napari session has
    t0 = time.perf_counter()
    lazy = denoise(stack, net)
    t1 = time.perf_counter()
    np.asarray(lazy[planes // 2])
    t2 = time.perf_counter()
    denoise(planes_np[0], net)
    t3 = time.perf_counter()
    denoise(planes_np[0], net)
    mem = time.perf_counter() - t3
    return ["| lazy stack | build the lazy result | first slice shown | in-memory denoise of one slice |", "|---|---|---|---|",
            f"| {planes} x {size}² | {t1 - t0:.2f} s | {t2 - t0:.2f} s | {mem:.2f} s |"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["files", "memory", "first"], default=None)
    p.add_argument("--files", type=int, default=16, help="files for the files/s figure")
    p.add_argument("--file-size", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sizes", type=int, nargs="+", default=[8192], help="square image sides for the memory figure")
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "first"):
            print("\n".join(first_slice(1024, 20)), "\n", flush=True)
        if args.only in (None, "files"):
            print("\n".join(files_per_second(args.files, args.file_size, args.workers, tmp)), "\n", flush=True)
        if args.only in (None, "memory"):
            print("\n".join(peak_memory(args.sizes, tmp)), flush=True)


if __name__ == "__main__":
    main()
