"""Sample images for File > Open Sample, generated on the fly by the simulator."""

from __future__ import annotations

from .simulate import simulate

# 0.02 nm/px keeps a 16 px period near a typical 0.3 nm projected spacing.
SAMPLE_PIXEL_SIZE_NM = 0.02


def _layer(data, name, visible=True):
    return [(data, {"name": name, "scale": (SAMPLE_PIXEL_SIZE_NM,) * 2, "units": ("nm", "nm"), "visible": visible}, "image")]


def clean_lattice():
    """A clean synthetic square lattice (512x512 px, 16 px period), as a physicist would supply."""
    sim = simulate(size=(512, 512), period=16.0, dents=0, dose=100.0, seed=1)
    return _layer(sim.clean, "clean lattice")


def _dented():
    return simulate(size=(512, 512), period=16.0, dents=1, dent_depth=0.4, dose=6.0, row_offset=0.3, seed=2)


def noisy_dented():
    """A noisy STEM ADF image (512x512 px, 16 px period, 6 counts/px) with one dent."""
    return _layer(_dented().noisy, "noisy dented")


def noisy_with_truth():
    """The same noisy image, its noise-free truth and its dent map (0-1): what Scores compares with."""
    sim = _dented()
    return [*_layer(sim.noisy, "noisy dented"), *_layer(sim.clean, "noisy dented truth", visible=False),
            *_layer(sim.dent.astype("float32"), "noisy dented dent map", visible=False)]


def specimen():
    """A SrTiO3 [001] scene (512x512 px, 14 px period, 4 counts/px) with empty Sr and TiO columns, as uint16
    detector values with scan streaks: real-looking data to denoise and check."""
    from .scenes import make_scene

    scene = make_scene(kind="vacancies", size=512, period=14.0, dose=4.0, vacancy=0.05, seed=31)
    return _layer(scene.noisy, "SrTiO3 with vacancies")
