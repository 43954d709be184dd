"""The demo: simulate a noisy dented image, denoise it, score it against its truth, write it all.

``emdenoise demo`` prints what :func:`run_demo` returns; a script can call it the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .bench import side_by_side
from .inference import denoise, resolve_model
from .io import write_tiff
from .metrics import score
from .simulate import simulate

SIZE = 512


def run_demo(out, model=None, *, period: float = 14.0, dose: float = 4.0, seed: int = 2026) -> dict:
    """Write input.tif, output.tif, truth.tif, scores.json and demo.png to ``out`` (which must be new or
    empty); returns the report that scores.json holds (``input`` and ``output`` scores, ``seconds``)."""
    out = Path(out)
    net = resolve_model(model)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"'{out}' is not an empty folder; choose a new folder")
    sim = simulate(size=(SIZE, SIZE), period=period, dose=dose, dents=1, dent_depth=0.4, row_offset=0.3, seed=seed)
    t0 = time.perf_counter()
    result = denoise(sim.noisy, net, tile=512, overlap=64)
    seconds = time.perf_counter() - t0
    before = score(sim.noisy, sim.clean, sim.dent, period)
    after = score(result, sim.clean, sim.dent, period)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("input", sim.noisy), ("output", result), ("truth", sim.clean)):
        write_tiff(out / f"{name}.tif", arr)
    report = {"input": before.to_dict(), "output": after.to_dict(), "seconds": seconds,
              "image": {"size": [SIZE, SIZE], "period_px": period, "dose": dose, "seed": seed}}
    (out / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    crop = (slice(128, 384), slice(96, 352))
    side_by_side([
        (f"noisy input: PSNR {before.psnr:.1f} dB, SSIM {before.ssim:.2f}", sim.noisy[crop]),
        (f"denoised: PSNR {after.psnr:.1f} dB, SSIM {after.ssim:.2f}, F1 {after.f1:.3f}", result[crop]),
        ("truth", sim.clean[crop]),
    ], out / "demo.png")
    return report
