"""TIFF input and output for STEM images.

Every way a file can be unreadable ends in one :class:`ImageFileError` that names the
file and says what is wrong; writes go to a temporary file that replaces the target
only when complete, so a failed write (full disk, cancelled job) never destroys what
was there before.

Pixel sizes are reported in nanometres when the file's unit is known.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

# length units -> nanometres
_UNIT_TO_NM = {
    "m": 1e9,
    "mm": 1e6,
    "cm": 1e7,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "nm": 1.0,
    "a": 0.1,
    "å": 0.1,
    "Å": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
    "inch": 2.54e7,
}


class ImageFileError(ValueError):
    """A file could not be read or written; the message says which and why."""


@dataclass
class TiffImage:
    """An image read from a TIFF file.

    ``pixel_size`` is (y, x) in nanometres, or None when the file does not say.
    ``notes`` holds things the user should be told (e.g. an RGB file made grey).
    """

    data: np.ndarray
    path: Path
    original_dtype: str
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def axes(self) -> str:
        """One letter per axis of ``data`` (tifffile's: T time, Z depth, C channel, Q/I other, Y and X the image)."""
        return self.metadata.get("axes") or ("Q" * (self.data.ndim - 2) + "YX")

    @property
    def name(self) -> str:
        return self.path.stem

    def scale(self) -> tuple[float, ...]:
        """Per-axis scale for a napari layer (1 for axes other than the last two)."""
        lead = (1.0,) * (self.data.ndim - 2)
        if self.pixel_size is None:
            return lead + (1.0, 1.0)
        return lead + tuple(float(v) for v in self.pixel_size)


def is_tiff_path(path: str | os.PathLike) -> bool:
    """True for a path whose suffix is .tif or .tiff, in any case."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def list_tiffs(folder: str | os.PathLike) -> list[Path]:
    """The .tif/.tiff files directly in ``folder``, sorted by name (empty for a missing folder)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and is_tiff_path(p)) if folder.is_dir() else []


def expand_tiffs(paths) -> list[Path]:
    """Files as given, folders replaced by their TIFFs; a folder without any is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_tiffs(p)
            if not found:
                raise ImageFileError(f"folder '{p}' holds no .tif files")
            out += found
        else:
            out.append(p)
    return out


def _unit_to_nm(unit: str | None) -> float | None:
    if not unit:
        return None
    u = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unit.strip())
    return _UNIT_TO_NM.get(u, _UNIT_TO_NM.get(u.lower()))


def _rational(value) -> float | None:
    try:
        if isinstance(value, tuple):
            num, den = value
            return num / den if den else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _pixel_size_from_ome(xml: str) -> tuple[tuple[float, float], str] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            px, py = el.get("PhysicalSizeX"), el.get("PhysicalSizeY")
            if px is None:
                return None
            factor = _unit_to_nm(el.get("PhysicalSizeXUnit", "µm"))
            if factor is None:
                return None
            py = py if py is not None else px
            return (float(py) * factor, float(px) * factor), "nm"
    return None


def _pixel_size(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> tuple[tuple[float, float] | None, str]:
    """Pixel size (y, x) in nm and where it came from; a zero, negative or non-finite one counts as none
    (source ``"invalid: ..."``, which the reader turns into a note)."""
    try:
        size, source = _stored_pixel_size(tif, page)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        return None, f"invalid: {exc}"
    if size is not None and not all(0 < v < float("inf") for v in size):
        return None, f"invalid: {source} says {size[1]:g} x {size[0]:g} nm"
    return size, source


def _stored_pixel_size(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> tuple[tuple[float, float] | None, str]:
    if tif.is_ome and tif.ome_metadata:
        found = _pixel_size_from_ome(tif.ome_metadata)
        if found:
            return found[0], "OME-XML"
    tags = page.tags
    xres = _rational(tags["XResolution"].value) if "XResolution" in tags else None
    yres = _rational(tags["YResolution"].value) if "YResolution" in tags else None
    if not xres:
        return None, "none"
    yres = yres or xres
    ij = tif.imagej_metadata or {}
    if ij.get("unit"):
        factor = _unit_to_nm(str(ij["unit"]))
        if factor is not None:
            return (factor / yres, factor / xres), "ImageJ"
    runit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    # 72 or 96 dots per inch and 1 px per unit are writer defaults, not measurements.
    if runit == 1 or (runit == 2 and xres in (1.0, 72.0, 96.0, 300.0)):
        return None, "none"
    factor = {2: _UNIT_TO_NM["inch"], 3: _UNIT_TO_NM["cm"]}.get(runit)
    if factor is None:
        return None, "none"
    return (factor / yres, factor / xres), "resolution tags"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of an (..., 3|4) array; exact for grey images stored as RGB."""
    weights = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)
    grey = rgb[..., :3].astype(np.float64) @ weights
    if np.issubdtype(rgb.dtype, np.integer):
        return np.rint(grey).astype(rgb.dtype)
    return grey.astype(rgb.dtype)


def _check_claimed_size(path: Path, page, shape: tuple, dtype) -> None:
    """An uncompressed TIFF holds all its pixels: a header that claims far more than the file has is damaged (it
    would otherwise ask for terabytes of memory)."""
    need = float(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    have = path.stat().st_size
    if page.compression == 1 and need > 1.05 * have + 2**20:
        raise ImageFileError(f"Cannot read '{path.name}': its header says {'x'.join(map(str, shape))} pixels "
                             f"({need / 2**30:.1f} GiB) but the file has {have / 2**20:.1f} MiB: it is truncated or "
                             "corrupt. Copy or export the file again.")


def _check_regular(path: Path) -> None:
    """A file that exists and can be read as a whole: not a folder, a pipe or a device (those would block or stream)."""
    if path.is_symlink() and not path.exists():
        raise ImageFileError(f"Cannot open '{path}': it is a broken link or a link to itself.")
    if not path.exists():
        raise ImageFileError(f"Cannot open '{path}': no such file.")
    if path.is_dir():
        raise ImageFileError(f"Cannot open '{path}': it is a folder, not a TIFF file.")
    if not path.is_file():  # a FIFO, socket or device would block or stream forever
        raise ImageFileError(f"Cannot open '{path}': it is not a regular file (a pipe or a device?); save the image to a file first.")


def _check_magic(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) < 4:
        raise ImageFileError(f"Cannot open '{path.name}': the file is empty or truncated ({len(head)} bytes).")
    if head not in _TIFF_MAGIC:
        raise ImageFileError(
            f"Cannot open '{path.name}': it is not a TIFF file (it starts with bytes {head!r}). "
            "Export the image as TIFF from the microscope software, or rename it to its real format."
        )


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile logs each problem of a damaged file as it meets it; the one clear error that follows says it all."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def read_tiff(path: str | os.PathLike) -> TiffImage:
    """Read a 2D image or a stack from a TIFF file, with its pixel size and metadata.

    Raises :class:`ImageFileError` with a message naming the file for anything that
    is not a readable, non-empty grey-value TIFF.
    """
    path = Path(path)
    _check_regular(path)
    _check_magic(path)
    notes: list[str] = []
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageFileError(f"Cannot open '{path.name}': the TIFF holds no readable image; it is truncated or corrupt. Copy or export the file again.")
            series = tif.series[0]
            page = tif.pages[0]
            if len(tif.series) > 1:
                notes.append(f"'{path.name}' holds {len(tif.series)} image series; the first ({'x'.join(map(str, series.shape))}, "
                             f"axes {series.axes}) was read. Export the one you want as its own TIFF to use another.")
            shape = tuple(series.shape)
            if 0 in shape or len(shape) == 0:
                raise ImageFileError(f"Cannot open '{path.name}': the image is empty (shape {shape}).")
            _check_claimed_size(path, page, shape, series.dtype)
            data = series.asarray()
            pixel_size, source = _pixel_size(tif, page)
            if source.startswith("invalid"):
                notes.append(f"'{path.name}' has an impossible pixel size ({source[9:]}); it is treated as unknown.")
            photometric = getattr(page.photometric, "name", str(page.photometric))
            meta: dict[str, Any] = {
                "source": str(path),
                "pages": len(tif.pages),
                "axes": series.axes,
                "photometric": photometric,
                "pixel_size_source": source,
            }
            if tif.imagej_metadata:
                meta["imagej"] = {k: _jsonable(v) for k, v in tif.imagej_metadata.items()}
            if page.description and not tif.is_ome:
                meta["description"] = page.description[:4000]
    except ImageFileError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageFileError(
            f"Cannot read '{path.name}': the TIFF is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Copy or export the file again."
        ) from exc
    if data.size == 0 or 0 in data.shape:
        raise ImageFileError(f"Cannot open '{path.name}': the image is empty (shape {data.shape}).")
    original_dtype = str(data.dtype)

    if data.dtype.kind == "c":
        raise ImageFileError(f"Cannot open '{path.name}': complex-valued images ({data.dtype}) are not supported.")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
        notes.append(f"'{path.name}': float16 data converted to float32.")

    rgb = photometric == "RGB" or (data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4)
    if rgb and data.shape[-1] in (3, 4):
        data = _luminance(data)
        meta["converted_from_rgb"] = True
        notes.append(f"'{path.name}' is an RGB image; it was converted to one grey channel (luminance).")
    axes = meta["axes"] if len(meta["axes"]) == data.ndim else ""
    if data.ndim > 2:  # length-1 axes go, with their letters; the image axes stay
        keep = [i for i, n in enumerate(data.shape) if n > 1 or i >= data.ndim - 2]
        data = data.reshape([data.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep) if axes else ""
    meta["axes"] = axes if len(axes) == data.ndim and axes.endswith("YX") else "Q" * (data.ndim - 2) + "YX"
    if data.ndim < 2:
        raise ImageFileError(f"Cannot open '{path.name}': expected a 2D image or a stack, got shape {data.shape}.")
    meta["original_dtype"] = original_dtype
    if pixel_size is not None:
        meta["pixel_size_nm"] = list(pixel_size)
    return TiffImage(
        data=data,
        path=path,
        original_dtype=original_dtype,
        pixel_size=pixel_size,
        unit="nm" if pixel_size is not None else None,
        metadata=meta,
        notes=notes,
    )


def _imagej_axes(axes: str | None, ndim: int) -> str | None:
    """The ImageJ hyperstack axes for an array, or None when ImageJ cannot hold it (more than TZCYX, or axes it
    does not know). Without given axes, a stack is Z and a 4-D or 5-D array is taken in ImageJ's own order."""
    if ndim > 5:
        return None
    if not axes:
        return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}[ndim]
    axes = axes.upper()
    if len(axes) != ndim or not axes.endswith("YX"):
        return None
    lead = axes[:-2].replace("Q", "Z").replace("I", "Z").replace("S", "C")
    if len(set(lead)) != len(lead) or any(a not in "TZC" for a in lead):
        return None
    order = "".join(a for a in "TZC" if a in lead)
    return lead + "YX" if lead == order else None


def _to_uint16(data: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Integer data in range is kept; anything else is mapped linearly onto 0..65535."""
    if np.issubdtype(data.dtype, np.integer) and data.min() >= 0 and data.max() <= 65535:
        return data.astype(np.uint16), {"offset": 0.0, "scale": 1.0}
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (hi - lo) / 65535.0 if hi > lo else 1.0
    out = np.clip(np.rint((np.nan_to_num(data, nan=lo) - lo) / scale), 0, 65535).astype(np.uint16)
    return out, {"offset": lo, "scale": scale}


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    pixel_size: tuple[float, float] | float | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    description: dict[str, Any] | None = None,
    axes: str | None = None,
) -> Path:
    """Write ``data`` as an ImageJ-compatible TIFF with its pixel size (nm) and return the path.

    ``dtype`` is "float32" (values kept) or "uint16" (integers kept; other values mapped
    linearly onto 0..65535, the mapping stored in the description). ``axes`` names the axes
    (as :attr:`TiffImage.axes`; default ZYX for a stack, TZYX and TZCYX above): up to 5-D in
    ImageJ's order the file is an ImageJ hyperstack, otherwise a plain TIFF with the axes and a
    pixel size in cm. The file appears only when completely written; an existing file is kept
    unless ``overwrite`` is true.
    """
    path = Path(path)
    if dtype not in ("float32", "uint16"):
        raise ValueError(f"dtype must be 'float32' or 'uint16', not {dtype!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    arr = np.asarray(data)
    if arr.ndim < 2 or 0 in arr.shape:
        raise ValueError(f"Cannot write '{path.name}': expected a non-empty 2D image or stack, got shape {arr.shape}.")
    if pixel_size is not None:
        sizes = (pixel_size, pixel_size) if np.isscalar(pixel_size) else tuple(pixel_size)
        if len(sizes) != 2 or not all(isinstance(v, (int, float, np.number)) and 0 < v < float("inf") for v in sizes):
            raise ValueError(f"Cannot write '{path.name}': the pixel size must be a positive number of nm (or two, y and "
                             f"x), not {pixel_size!r}; leave it out when it is unknown.")
    info: dict[str, Any] = dict(description or {})
    if dtype == "uint16":
        arr, mapping = _to_uint16(arr)
        info["uint16_mapping"] = mapping
    else:
        arr = arr.astype(np.float32, copy=False)
    ij_axes = _imagej_axes(axes, arr.ndim)
    imagej = ij_axes is not None  # ImageJ hyperstacks (up to TZCYX): axes, pixel size unit and Info that Fiji reads
    meta: dict[str, Any] = {"axes": ij_axes} if imagej else {}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": meta} if imagej else {"metadata": {"axes": axes or "Q" * (arr.ndim - 2) + "YX"}}
    if pixel_size is not None:
        py, px = (pixel_size, pixel_size) if np.isscalar(pixel_size) else pixel_size
        kwargs["resolution"] = (1.0 / float(px), 1.0 / float(py))
        if imagej:
            meta["unit"] = "nm"
        else:  # no ImageJ unit: resolution in pixels per cm, which every reader understands (not inches)
            kwargs["resolution"] = (1e7 / float(px), 1e7 / float(py))
            kwargs["resolutionunit"] = "CENTIMETER"
    if info:
        if imagej:
            meta["Info"] = json.dumps(info, sort_keys=True)
        else:
            kwargs["description"] = json.dumps(info, sort_keys=True)
    try:
        atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, **kwargs), size_hint=arr.nbytes + 65536)
    except DiskFullError as exc:
        raise ImageFileError(exc.strerror) from exc
    except OSError as exc:
        raise ImageFileError(f"Could not write '{path}': {exc.strerror or exc}. Nothing was changed there.") from exc
    return path


class DiskFullError(OSError):
    """The disk filled up while a file was written; nothing was changed at its path."""


def _hit_size_limit(exc: BaseException, folder: Path) -> bool:
    """EFBIG: the file outgrew what the file system or ``ulimit -f`` allows (not a full disk); also a short write
    with the disk far from full, which a file-size limit stopped, not the space."""
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return True
    text = str(exc)
    if "os error 27" in text or "File too large" in text:
        return True
    short_write = _is_disk_full(exc, folder) and not (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
    return short_write and shutil.disk_usage(folder).free > 1e9


def _size_limit_error(path: Path) -> DiskFullError:
    return DiskFullError(errno.EFBIG, f"'{path}' could not be written: the file system, or a limit set for this "
                                      "process (ulimit -f), allows no file this large; write elsewhere or raise the "
                                      "limit. Nothing was changed there")


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    if isinstance(exc, OSError) and "requested and" in text and "written" in text:  # numpy's tofile: a short write
        return True
    if "os error 28" in text or "No space left on device" in text:  # safetensors' writer (Rust) says it in words
        return True
    # torch.save reports "file write failed" in a RuntimeError: a full disk when (almost) nothing is left
    return isinstance(exc, RuntimeError) and "write failed" in text and shutil.disk_usage(folder).free < 64e6


def atomic_write(path: str | os.PathLike, write, size_hint: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    A failure or an interruption (full disk, killed process) leaves whatever was at ``path``
    untouched; the new file gets the usual permissions (not mkstemp's owner-only ones). A full
    disk raises :class:`DiskFullError` saying so, with the space needed (``size_hint`` bytes,
    when known) and the space free.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _hit_size_limit(exc, path.parent):
            raise _size_limit_error(path) from exc
        if _is_disk_full(exc, path.parent):
            free = shutil.disk_usage(path.parent).free
            need = f"about {size_hint / 1e6:.1f} MB needed, " if size_hint else ""
            said = getattr(exc, "strerror", None) or str(exc)
            raise DiskFullError(errno.ENOSPC, f"disk full: '{path}' could not be written ({need}{free / 1e6:.1f} MB "
                                              f"free on that disk; the system said: {said}); free some space or write "
                                              "elsewhere. Nothing was changed there") from exc
        raise
    return path


def safe_stem(name: str) -> str:
    """A file-name-safe version of a layer or file name."""
    stem = re.sub(r"[^\w.+-]+", "_", name).strip("._")
    return stem or "image"


# --------------------------------------------------------------------------- lazy (dask) inputs and zarr outputs
LARGE_PX = 2**26  # px (8192^2): a TIFF plane or stack above this is read lazily, chunk by chunk, and written as zarr


def is_zarr_path(path: str | os.PathLike) -> bool:
    """A zarr store: a folder named *.zarr, or any folder holding zarr metadata."""
    p = Path(path)
    return p.is_dir() and (p.suffix.lower() == ".zarr" or any((p / m).exists() for m in (".zarray", ".zgroup", "zarr.json")))


def read_lazy(path: str | os.PathLike, chunk: int = 2048):
    """A dask array over ``path`` without reading the pixels: a zarr store (an OME-Zarr's full-resolution level), a
    TIFF (tiled or strip-wise, through tifffile's zarr view), or a folder of same-shaped TIFFs stacked in name order.
    Returns ``(array, pixel_size)``; pixel_size (y, x) in nm or None."""
    import dask.array as da

    p = Path(path)
    if not p.exists():
        raise ImageFileError(f"Cannot open '{p}': no such file or folder.")
    if is_zarr_path(p):
        import zarr

        try:
            node = zarr.open(str(p), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr's errors vary by version
            raise ImageFileError(f"Cannot open '{p}' as a zarr store: {exc}") from exc
        if not hasattr(node, "shape"):  # a group: OME-Zarr's first multiscale level, or its one array
            names = [k for k, _ in node.arrays()]
            multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
            name = multiscales[0]["datasets"][0]["path"] if multiscales else (names[0] if len(names) == 1 else None)
            if name is None:
                raise ImageFileError(f"'{p}' is a zarr group with {len(names)} arrays and no OME multiscales; name the array's folder")
            node = node[name]
        arr = da.from_zarr(node)
        return arr, _zarr_pixel_size(p)
    if p.is_dir():
        files = list_tiffs(p)
        if not files:
            raise ImageFileError(f"folder '{p}' holds no .tif files and no zarr store")
        first = read_tiff_header(files[0])
        import dask

        planes = []
        for f in files:
            h = read_tiff_header(f)
            if (h.shape, h.dtype) != (first.shape, first.dtype):
                raise ImageFileError(f"'{f.name}' is {h.dtype} {'x'.join(map(str, h.shape))} but '{files[0].name}' is "
                                     f"{first.dtype} {'x'.join(map(str, first.shape))}: a folder read as one stack needs "
                                     "images of one shape and type")
            planes.append(da.from_delayed(dask.delayed(_read_data)(str(f)), shape=first.shape, dtype=first.dtype))
        return da.stack(planes), first.pixel_size
    head = read_tiff_header(p)
    import tifffile as tf

    store = tf.imread(p, aszarr=True)
    import zarr

    arr = da.from_zarr(zarr.open(store, mode="r"))
    if arr.ndim > 2 and arr.shape[-1] in (3, 4) and head.shape[-1] in (3, 4):
        raise ImageFileError(f"'{p.name}' holds colour (RGB) data; export one grey channel to denoise it lazily")
    return arr.rechunk(tuple(min(n, chunk) if i >= arr.ndim - 2 else 1 for i, n in enumerate(arr.shape))), head.pixel_size


@dataclass
class TiffHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    pixel_size: tuple[float, float] | None


def read_tiff_header(path: str | os.PathLike) -> TiffHeader:
    """Shape, type and pixel size of a TIFF's first series, without reading its pixels."""
    path = Path(path)
    _check_regular(path)
    _check_magic(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageFileError(f"Cannot open '{path.name}': the TIFF holds no readable image; it is truncated or corrupt.")
            series = tif.series[0]
            _check_claimed_size(path, tif.pages[0], tuple(series.shape), series.dtype)
            size, _ = _pixel_size(tif, tif.pages[0])
            return TiffHeader(tuple(int(n) for n in series.shape), np.dtype(series.dtype), size)
    except ImageFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds for damaged files
        raise ImageFileError(f"Cannot open '{path.name}': {exc}; it is truncated or corrupt.") from exc


def _read_data(path: str) -> np.ndarray:
    return read_tiff(path).data


def _zarr_pixel_size(path: Path) -> tuple[float, float] | None:
    """The pixel size our zarr outputs record (attribute 'pixel_size_nm'), or an OME-Zarr's scale for nm/um axes."""
    import zarr

    try:
        attrs = dict(zarr.open(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001
        return None
    if "pixel_size_nm" in attrs:
        return tuple(float(v) for v in attrs["pixel_size_nm"])
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        axes = ms[0]["axes"]
        scale = next(t["scale"] for t in ms[0]["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
        factor = {"nanometer": 1.0, "micrometer": 1e3, "angstrom": 0.1}[axes[-1].get("unit")]
        return float(scale[-2]) * factor, float(scale[-1]) * factor
    except (TypeError, KeyError, IndexError, StopIteration):
        return None


def write_zarr(path: str | os.PathLike, data, *, pixel_size: tuple[float, float] | None = None, overwrite: bool = False,
               attrs: dict[str, Any] | None = None) -> Path:
    """Write a (dask) array as an OME-Zarr (0.5, one resolution level) at ``path``, computing it chunk by chunk. The store
    appears under its name only when complete (written beside it, then renamed); an existing one is kept unless
    ``overwrite``."""
    import dask.array as da

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    arr = data if hasattr(data, "chunks") and not isinstance(data, np.ndarray) else da.from_array(np.asarray(data))
    # zarr chunks are regular: blocks of uneven size written side by side would share (and overwrite) a zarr chunk
    arr = arr.rechunk(tuple(max(c) for c in arr.chunks))
    if pixel_size is not None and np.isscalar(pixel_size):
        pixel_size = (float(pixel_size), float(pixel_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        import zarr

        # OME-Zarr 0.5 (zarr v3): a group whose one full-resolution level "0" carries the pixel size in nm
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        z = group.create_array("0", shape=arr.shape, dtype=arr.dtype, chunks=tuple(int(c[0]) for c in arr.chunks))
        names = ["t", "c", "z"][-(arr.ndim - 2):] if 2 < arr.ndim <= 5 else [f"dim_{i}" for i in range(arr.ndim - 2)]
        axes = [{"name": n, "type": {"t": "time", "c": "channel", "z": "space"}.get(n)} for n in names]
        axes = [{k: v for k, v in a.items() if v is not None} for a in axes]
        axes += [{"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", "unit": "nanometer"}]
        if pixel_size is None:
            axes = [{k: v for k, v in a.items() if k != "unit"} for a in axes]
        scale = [1.0] * (arr.ndim - 2) + [float(v) for v in (pixel_size or (1.0, 1.0))]
        group.attrs.update({**(attrs or {}), **({"pixel_size_nm": list(pixel_size)} if pixel_size else {}),
                            "ome": {"version": "0.5", "multiscales": [{
                                "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
                                    {"type": "scale", "scale": scale}]}]}]}})
        da.store(arr, z, lock=False)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _hit_size_limit(exc, path.parent):
            raise _size_limit_error(path) from exc
        if _is_disk_full(exc, path.parent):
            raise ImageFileError(f"disk full: '{path}' could not be written; free some space or write elsewhere. Nothing "
                                 "was changed there") from exc
        raise
    return path


# --------------------------------------------------------------------------- microscope formats (rosettasciio)
EM_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".ser": "tia", ".emi": "tia", ".emd": "emd"}
_ADF_WORDS = ("haadf", "adf", "df")  # a detector name that says dark field: preferred over bright field


def is_em_path(path: str | os.PathLike) -> bool:
    """A Gatan DigitalMicrograph (.dm3/.dm4), TIA (.ser/.emi) or EMD (Velox/Berkeley, .emd) file name."""
    return Path(path).suffix.lower() in EM_SUFFIXES


def is_image_path(path: str | os.PathLike) -> bool:
    """A file name this package reads: TIFF or a microscope format."""
    return is_tiff_path(path) or is_em_path(path)


def read_image(path: str | os.PathLike) -> TiffImage:
    """Read a TIFF (:func:`read_tiff`) or a microscope file (:func:`read_em`) by its suffix."""
    return read_em(path) if is_em_path(path) else read_tiff(path)


def _title(signal: dict) -> str:
    general = signal.get("metadata", {}).get("General", {})
    return str(general.get("title") or general.get("original_filename") or "")


def read_em(path: str | os.PathLike) -> TiffImage:
    """Read a Gatan DM3/DM4, TIA SER/EMI or EMD file with rosettasciio: the image (or stack) and its pixel size in nm.

    A file with several images (EMI/EMD with more than one detector, say) gives the first dark-field one by its title
    (HAADF, ADF, DF), else the first; a note names the others. Spectra and other non-image signals are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"Cannot open '{path}': no such file.")
    if not path.is_file():
        raise ImageFileError(f"Cannot open '{path}': it is not a regular file.")
    plugin = EM_SUFFIXES.get(path.suffix.lower())
    if plugin is None:
        raise ImageFileError(f"Cannot open '{path.name}': not a DM3/DM4, SER/EMI or EMD file.")
    try:
        import importlib

        reader = importlib.import_module(f"rsciio.{plugin}").file_reader
    except ImportError as exc:
        raise ImageFileError(f"Cannot open '{path.name}': reading {path.suffix} files needs the optional readers "
                             "(GPL-3 rosettasciio, kept out of the BSD core): pip install 'napari-emdenoise[formats]'. "
                             f"The import said: {exc}") from None
    try:
        signals = reader(str(path))
    except Exception as exc:  # noqa: BLE001 - the readers raise many kinds for damaged or foreign files
        raise ImageFileError(f"Cannot read '{path.name}': it is truncated, corrupt or not a {path.suffix} image "
                             f"({type(exc).__name__}: {exc}). Copy or export the file again.") from exc
    images = [s for s in signals if sum(not a.get("navigate", False) for a in s.get("axes", [])) == 2
              and np.asarray(s["data"]).ndim >= 2]
    if not images:
        raise ImageFileError(f"Cannot open '{path.name}': it holds no image (only spectra or other signals).")
    dark = [s for s in images if any(w in _title(s).lower() for w in _ADF_WORDS) and "bf" not in _title(s).lower()]
    chosen = (dark or images)[0]
    notes: list[str] = []
    if len(images) > 1:
        names = ", ".join(repr(_title(s) or f"image {i + 1}") for i, s in enumerate(images))
        notes.append(f"'{path.name}' holds {len(images)} images ({names}); {_title(chosen) or 'the first'!r} was read.")
    data = np.asarray(chosen["data"])
    if data.dtype.kind == "c":
        raise ImageFileError(f"Cannot open '{path.name}': complex-valued images ({data.dtype}) are not supported.")
    if data.dtype.fields is not None:  # DM RGB(A) records
        raise ImageFileError(f"Cannot open '{path.name}': it holds a colour image; export one grey channel.")
    original_dtype = str(data.dtype)
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    axes = chosen["axes"]
    sig = [a for a in axes if not a.get("navigate", False)][-2:]
    scales = []
    for a in sig:
        factor = _unit_to_nm(str(a.get("units") or ""))
        scale = float(a.get("scale") or 0)
        scales.append(scale * factor if factor and scale > 0 else None)
    pixel_size = tuple(scales) if all(s is not None for s in scales) else None
    if pixel_size is None:
        notes.append(f"'{path.name}' gives no pixel size in a length unit; distances are in pixels.")
    keep = [i for i, n in enumerate(data.shape) if n > 1 or i >= data.ndim - 2]
    data = data.reshape([data.shape[i] for i in keep])
    meta = {"format": plugin, "title": _title(chosen), "original_dtype": original_dtype, "axes": "Q" * (data.ndim - 2) + "YX"}
    if pixel_size is not None:
        meta["pixel_size_nm"] = list(pixel_size)
    return TiffImage(data=data, path=path, original_dtype=original_dtype, pixel_size=pixel_size,
                     unit="nm" if pixel_size is not None else None, metadata=meta, notes=notes)
