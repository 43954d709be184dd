"""napari-emdenoise: denoise atomic-resolution STEM images, keeping atom columns and dents.

The core library (this package minus ``_widgets``, ``_reader``, ``_writer`` and
``_sample_data``) imports neither Qt nor napari, so it can be scripted and batched.
Every name is imported when first used (torch only with a denoising name), so opening a TIFF
in napari stays fast and a Ctrl-C while the ``emdenoise`` command loads ends with one line.
"""

_LAZY = {  # name: (module, attribute), imported on first use so that importing the package costs nothing
    "ImageFileError": ("io", "ImageFileError"),
    "read_tiff": ("io", "read_tiff"),
    "write_tiff": ("io", "write_tiff"),
    "SimParams": ("simulate", "SimParams"),
    "SimResult": ("simulate", "SimResult"),
    "simulate": ("simulate", "simulate"),
    "check": ("consistency", "check"),
    "refit_columns": ("refit", "refit_columns"),
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
    "refit_columns",
    "simulate",
    "write_tiff",
]


def __getattr__(name):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("napari-emdenoise")
        except PackageNotFoundError:  # running from a source tree
            found = "0.0.0+unknown"
        globals()["__version__"] = found  # read the metadata once: later reads find the attribute
        return found
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
