"""napari-emdenoise: denoise atomic-resolution STEM images, keeping atom columns and dents.

The core library (this package minus ``_widgets``, ``_reader``, ``_writer`` and
``_sample_data``) imports neither Qt nor napari, so it can be scripted and batched.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-emdenoise")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from .io import ImageFileError, read_tiff, write_tiff
from .simulate import SimParams, SimResult, simulate

__all__ = [
    "ImageFileError",
    "SimParams",
    "SimResult",
    "__version__",
    "read_tiff",
    "simulate",
    "write_tiff",
]
