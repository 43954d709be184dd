"""napari-emdenoise: denoise atomic-resolution STEM images, keeping atom columns and dents.

The core library (this package minus ``_widgets``, ``_reader``, ``_writer`` and
``_sample_data``) imports neither Qt nor napari, so it can be scripted and batched.
Torch is imported only when a denoising name is first used, so opening a TIFF in napari
stays fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-emdenoise")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from .io import ImageFileError, read_tiff, write_tiff
from .simulate import SimParams, SimResult, simulate

_LAZY = {
    "check": ("consistency", "check"),
    "denoise": ("inference", "denoise"),
    "iter_denoise": ("inference", "iter_denoise"),
    "Cancelled": ("inference", "Cancelled"),
    "load_generator": ("checkpoints", "load_generator"),
    "Denoiser": ("checkpoints", "Denoiser"),
    "CheckpointError": ("checkpoints", "CheckpointError"),
    "estimate_period": ("lattice", "estimate_period"),
}

__all__ = [
    "Cancelled",
    "CheckpointError",
    "Denoiser",
    "ImageFileError",
    "SimParams",
    "SimResult",
    "__version__",
    "check",
    "denoise",
    "estimate_period",
    "iter_denoise",
    "load_generator",
    "read_tiff",
    "simulate",
    "write_tiff",
]


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
