"""Where denoise()'s time goes on a device, beside the bare network (issue 13).

    python benchmarks/profile_device.py [--device cuda] [--size 4096] [--frames 32 --frame-size 1024]

Prints, for the bundled model on a simulated 4096² image and a stack of 32 x 1024² (each warmed up at its own
shape first):
1. each step of one plane's path timed apart, the device synchronised after each: upload, preparation (NaN check,
   range), intensity range, contrast check, period estimate, normalisation, the network pass (through the progress
   thread and directly), the mapping back, the copy back;
2. denoise() against variants measured in the same process, each best of 3: no progress thread (the pass called
   directly), float32 instead of mixed precision, cuDNN autotuning on, and the bare network on the same padded plane;
3. torch.profiler's top operators by host time and by device time for one denoise() call of each.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import contextmanager

import numpy as np
import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def best(f, dev: torch.device, repeats: int = 3) -> float:
    out = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        f()
        _sync(dev)
        out.append(time.perf_counter() - t0)
    return min(out)


@contextmanager
def direct_passes():
    """The network pass called in the caller's thread, without the progress thread and its layer hooks."""
    from napari_emdenoise import inference

    original = inference._pass_with_progress

    def direct(net, run, done, span, total, stage, what, layers=True):
        return run()
        yield  # a generator, as the original

    inference._pass_with_progress = direct
    try:
        yield
    finally:
        inference._pass_with_progress = original


def steps(img: np.ndarray, net, dev: torch.device) -> list[tuple[str, float, int]]:
    """Each step of one plane's path, timed apart (best of 3 each), with the pixels it covers."""
    from napari_emdenoise import lattice, nets
    from napari_emdenoise.devices import Downloader, Uploader
    from napari_emdenoise.inference import (_intensity_range, _prepare, _whole_pass, contrast_note, denormalize,
                                            normalize_with)
    from napari_emdenoise.jobs import drive
    from napari_emdenoise.checkpoints import model_info

    info = model_info(net)
    plane = img[0] if img.ndim == 3 else img
    up = Uploader(dev, 1)
    t = up(plane)
    p = _prepare(t, False, True)
    lo, hi = _intensity_range(p.data, info)
    x = normalize_with(p.data, lo, hi, info.clip)
    y = drive(_whole_pass(net, x, dev, True, 0, 1, 1))
    out = np.empty((1, *plane.shape), np.float32)
    batch = nets.pad_for_network(x[None, None], nets.size_multiple(net))

    def bare():
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            net(batch)

    def pass_direct():
        with direct_passes():
            drive(_whole_pass(net, x, dev, True, 0, 1, 1))

    rows = [
        ("upload (pageable)", lambda: Uploader(dev, 1)(plane)),
        ("prepare: NaN check, min/max", lambda: _prepare(t, False, True)),
        ("intensity range (percentiles)", lambda: _intensity_range(p.data, info)),
        ("contrast check", lambda: contrast_note(p.data, False)),
        ("period estimate", lambda: lattice.estimate_periods([p.data])),
        ("normalise", lambda: normalize_with(p.data, lo, hi, info.clip)),
        ("whole pass (progress thread)", lambda: drive(_whole_pass(net, x, dev, True, 0, 1, 1))),
        ("whole pass (direct)", pass_direct),
        ("bare network on the padded plane", bare),
        ("map back", lambda: denormalize(y, lo, hi)),
        ("copy back (pageable)", lambda: Downloader(out, dev)(0, y)),
    ]
    out = [(name, best(f, dev), plane.size) for name, f in rows]
    # benchmarks/inference.py's bare network (this script's folder is on sys.path): batches of 16 (4 on a CPU) tiles
    # of 512² already on the device, as many pixels as the plane; given as the time for the plane's pixels
    from inference import bare_network

    mps = bare_network(net, plane, 512, dev, amp=True)
    out.insert(-2, ("bare network, batches of tiles of 512²", plane.size / 1e6 / mps, plane.size))
    return out


def variants(img: np.ndarray, net, dev: torch.device) -> list[tuple[str, float]]:
    from napari_emdenoise import denoise

    def run(**kw):
        return lambda: denoise(img, net, device=str(dev), rescale=False, **kw)

    rows = [("denoise(rescale=False)", best(run(), dev)),
            ("denoise() with defaults", best(lambda: denoise(img, net, device=str(dev)), dev))]
    with direct_passes():
        rows.append(("no progress thread", best(run(), dev)))
    rows.append(("float32 (amp=False)", best(run(amp=False), dev)))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        run()()
        rows.append(("cuDNN autotuning on", best(run(), dev)))
        torch.backends.cudnn.benchmark = False
    return rows


def profile(img: np.ndarray, net, dev: torch.device, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from napari_emdenoise import denoise

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with tprofile(activities=acts) as prof:
        denoise(img, net, device=str(dev), rescale=False)
        _sync(dev)
    ka = prof.key_averages()
    print(ka.table(sort_by="cpu_time_total", row_limit=top, max_name_column_width=48))
    if dev.type == "cuda":
        print(ka.table(sort_by="self_cuda_time_total", row_limit=top, max_name_column_width=48))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--frame-size", type=int, default=1024)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    from napari_emdenoise import denoise
    from napari_emdenoise.inference import resolve_model
    from napari_emdenoise.simulate import simulate

    dev = torch.device(args.device)
    net = resolve_model(None).to(dev).eval()
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {name}")
    cases = {
        f"{args.size}²": simulate(size=args.size, period=10, dose=5, seed=1).noisy,
        f"{args.frames} x {args.frame_size}²": np.stack(
            [simulate(size=args.frame_size, period=10, dose=5, seed=s).noisy for s in range(args.frames)]),
    }
    for label, img in cases.items():
        denoise(img, net, device=args.device)  # warm-up at this shape
        mp = img.size / 1e6
        print(f"\n## {label} ({mp:.1f} MP)\n\n| step (one plane) | ms | MP/s |\n|---|---|---|")
        for step, s, px in steps(img, net, dev):
            print(f"| {step} | {1e3 * s:.2f} | {px / 1e6 / s:.1f} |")
        print("\n| run | s | MP/s |\n|---|---|---|")
        for run, s in variants(img, net, dev):
            print(f"| {run} | {s:.3f} | {mp / s:.1f} |")
        print()
        profile(img, net, dev, args.top)


if __name__ == "__main__":
    main()
