"""Inference throughput and peak memory of the public ``denoise`` entry point.

    python benchmarks/inference.py                       # CPU (and CUDA when present), default sizes
    python benchmarks/inference.py --sizes 512 4096 --models resnet9 --devices cuda
    python benchmarks/inference.py --defaults            # denoise() with every default against the bare network
    python benchmarks/inference.py --frames 32 --sizes 1024 --devices cuda   # a stack of 32 frames of 1024^2
    python benchmarks/inference.py --tiles-always        # the tile path even where the whole image fits one pass

Each measurement runs in a fresh subprocess so that its peak resident memory (CPU) or
peak allocated GPU memory (CUDA) is its own. Prints a Markdown table of megapixels per
second for the tiled path (tile 512, overlap 64 unless changed) and, where a whole-image
pass fits (CPU: up to 2048^2 px by default), the whole-image pass and the tiling overhead.
Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

MODELS = {
    "small": {"netG": "resnet_6blocks", "ngf": 32},
    "resnet9": {"netG": "resnet_9blocks", "ngf": 64},
}


def one(args: argparse.Namespace) -> dict:
    """Run one configuration in this process and report its figures."""
    import numpy as np
    import torch

    from napari_emdenoise import denoise
    from napari_emdenoise.nets import GeneratorConfig, build_generator, count_parameters, init_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    net = init_weights(build_generator(GeneratorConfig(**MODELS[args.model])), seed=0).eval()
    if args.tiles_always:  # what an image beyond the memory budget costs: tiles, statistics from a joint batch
        import napari_emdenoise.inference as inference

        inference._whole_pass_budget = lambda *a: 0
    shape = (args.frames, args.size, args.size) if args.frames > 1 else (args.size, args.size)
    img = np.random.default_rng(0).poisson(6.0, shape).astype(np.float32)
    tile = None if args.tile == 0 else args.tile
    device = torch.device(args.device)
    compile_s = None
    if args.compile:  # compiled per input shape: the first call at the full size compiles (timed apart)
        t0 = time.perf_counter()
        denoise(img, net, tile=tile, overlap=args.overlap, device=args.device, rescale=False, amp=args.amp, compile=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
    if device.type == "cuda":  # warm up kernels and cuDNN autotuning on a small image
        denoise(img[..., :512, :512], net, tile=tile, overlap=args.overlap, device=args.device, rescale=False, amp=args.amp)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = denoise(img, net, tile=tile, overlap=args.overlap, device=args.device, rescale=False, amp=args.amp,
                  compile=args.compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert out.shape == img.shape and np.isfinite(out).all()
    peak_gb = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    )
    bare = bare_network(net, img, args.tile or 512, device, args.amp) if args.tile else None
    return {
        "bare_mp_per_s": bare, "compile_s": compile_s,
        "model": args.model, "params_M": count_parameters(net) / 1e6, "device": args.device,
        "precision": "mixed" if (args.amp and device.type == "cuda") else "fp32", "size": args.size,
        "tile": args.tile, "seconds": seconds, "mp_per_s": img.size / 1e6 / seconds, "peak_gb": peak_gb,
        "frames": args.frames,
    }


def bare_network(net, img, tile: int, device, amp: bool) -> float:
    """MP/s of the network alone on the image's pixels as batches of 16 (4 on CPU) tiles already on the device: the
    ceiling that ``denoise`` approaches."""
    import torch

    net = net.to(device)
    n = 16 if device.type == "cuda" else 4
    x = torch.randn(n, 1, tile, tile, device=device)
    batches = max(1, round(img.size / (n * tile * tile)))
    ctx = torch.autocast("cuda", dtype=torch.float16) if (amp and device.type == "cuda") else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        net(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(batches):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * n * tile * tile / 1e6 / (time.perf_counter() - t0)


def defaults_ratio(size: int, device: str, repeats: int = 3, frames: int = 1) -> str:
    """The bundled model on a simulated image (a stack of ``frames``): the bare network on the whole normalised image
    (CPU; batches of tiles on CUDA) against ``denoise(image)`` with every default (period estimate, rescale plan) and
    with the period estimate off (``rescale=False``), best of ``repeats``, in this process. Returns a Markdown row."""
    import numpy as np
    import torch

    from napari_emdenoise import denoise
    from napari_emdenoise.inference import resolve_model
    from napari_emdenoise.simulate import simulate

    dev = torch.device(device)
    net = resolve_model(None).to(dev).eval()
    img = simulate(size=size, period=10, dose=5, seed=1).noisy
    if frames > 1:
        img = np.stack([simulate(size=size, period=10, dose=5, seed=s).noisy for s in range(frames)])
    denoise(img[..., :256, :256], net, device=device)  # warm-up

    def best(f) -> float:
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
        return min(out)

    if dev.type == "cuda":
        bare_mps = bare_network(net, img, 512, dev, amp=True)
    else:
        x = torch.from_numpy(((img - img.mean()) / img.std()).astype(np.float32)).reshape(-1, 1, size, size)
        with torch.inference_mode():
            bare_mps = img.size / 1e6 / best(lambda: [net(p[None]) for p in x])
    full = img.size / 1e6 / best(lambda: denoise(img, net, device=device))
    fixed = img.size / 1e6 / best(lambda: denoise(img, net, device=device, rescale=False))
    image = f"{frames} x {size}²" if frames > 1 else f"{size}²"
    return (f"| bundled | {device} | {image} | {bare_mps:.3f} | {fixed:.3f} | {full:.3f} | {full / bare_mps:.2f} | "
            f"{fixed / full - 1:+.1%} |")


def run_child(model: str, device: str, amp: bool, size: int, tile: int, overlap: int, threads: int | None,
              frames: int = 1, tiles_always: bool = False, compile: bool = False) -> dict | None:
    cmd = [sys.executable, __file__, "--one", "--models", model, "--devices", device, "--sizes", str(size),
           "--tile", str(tile), "--overlap", str(overlap), "--frames", str(frames)] + (["--amp"] if amp else []) + (
        ["--threads", str(threads)] if threads else []) + (["--tiles-always"] if tiles_always else []) + (
        ["--compile"] if compile else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        print(f"  failed: {model} {device} {size} tile {tile}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="generators to time")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="square image sides in px")
    p.add_argument("--tile", type=int, default=512, help="tile size (0: whole image)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap")
    p.add_argument("--whole-max", type=int, default=2048, help="largest side also run as one whole-image pass on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--frames", type=int, default=1, help="frames per image: a stack of this many planes")
    p.add_argument("--tiles-always", action="store_true",
                   help="the tile path even where the whole image fits one pass (as for an image beyond the memory budget)")
    p.add_argument("--compile", action="store_true",
                   help="also time denoise(compile=True) (torch.compile; the first call, which compiles, is timed apart)")
    p.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--defaults", action="store_true",
                   help="instead: the bundled model's denoise() with every default against its bare network, as a ratio")
    args = p.parse_args()
    if args.one:
        args.model, args.device, args.size = args.models[0], args.devices[0], args.sizes[0]
        print(json.dumps(one(args)))
        return
    if args.defaults:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
              + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
        print("| model | device | image | bare network MP/s | denoise(rescale=False) MP/s | denoise() with defaults MP/s | "
              "defaults / bare | time the defaults add |")
        print("|---|---|---|---|---|---|---|---|")
        for device in devices:
            for size in args.sizes or ([1024] if device == "cpu" else [4096]):
                print(defaults_ratio(size, device, frames=args.frames), flush=True)
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        sizes = args.sizes or ([512, 1024, 2048, 4096, 8192] if device == "cuda" else [512, 1024, 2048])
        for model, amp, size, comp in itertools.product(args.models, [False, True] if device == "cuda" else [False], sizes,
                                                        [False, True] if args.compile else [False]):
            tiled = run_child(model, device, amp, size, args.tile, args.overlap, args.threads, args.frames,
                              args.tiles_always, comp)
            whole = None
            if device == "cuda" or size <= args.whole_max:
                whole = run_child(model, device, amp, size, 0, 0, args.threads, args.frames, compile=comp)
            if tiled:
                tiled["whole_mp_per_s"] = whole["mp_per_s"] if whole else None
                tiled["whole_peak_gb"] = whole["peak_gb"] if whole else None
                rows.append(tiled)
                print(json.dumps(tiled), file=sys.stderr)
    print(f"\ntile {args.tile}, overlap {args.overlap}{', tile path forced' if args.tiles_always else ''}"
          f"{f', stacks of {args.frames} frames' if args.frames > 1 else ''}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print("| model | params | device | precision | image | bare network MP/s | tiled MP/s | tiled/bare | whole MP/s | tiled/whole | "
          "tiled peak GB | whole peak GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['mp_per_s'] / r['whole_mp_per_s']:.2f}" if r["whole_mp_per_s"] else "-"
        whole = f"{r['whole_mp_per_s']:.3f}" if r["whole_mp_per_s"] else "-"
        wpeak = f"{r['whole_peak_gb']:.2f}" if r["whole_peak_gb"] else "-"
        bare = f"{r['bare_mp_per_s']:.3f} | {r['mp_per_s'] / r['bare_mp_per_s']:.2f}" if r.get("bare_mp_per_s") else "- | -"
        image = f"{r['frames']} x {r['size']}²" if r.get("frames", 1) > 1 else f"{r['size']}²"
        precision = r["precision"] + (f", compiled ({r['compile_s']:.0f} s to compile)" if r.get("compile_s") else "")
        print(f"| {r['model']} | {r['params_M']:.2f} M | {r['device']} | {precision} | {image} | {bare.split(' | ')[0]} | "
              f"{r['mp_per_s']:.3f} | {bare.split(' | ')[1]} | {whole} | {ratio} | {r['peak_gb']:.2f} | {wpeak} |")


if __name__ == "__main__":
    main()
