"""Batches of files: one file's whole denoising (read, denoise, check, write) as one task, run here or on a
dask.distributed cluster.

A file's outputs appear only when complete (:func:`.io.atomic_write`, :func:`.io.write_zarr`), so a
file whose outputs all exist is done: a re-run skips it (``overwrite`` redoes it), and a run that is
interrupted or loses a worker leaves only complete outputs. Files up to :data:`.io.LARGE_PX` pixels
are denoised in memory and written as TIFF; larger TIFFs and zarr stores are read lazily, denoised
chunk by chunk (:mod:`.lazy`) and written as zarr.
"""

from __future__ import annotations

import functools
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileOptions:
    """How every file of a batch is denoised and written (the CLI's options)."""

    tile: int | None = 512
    overlap: int = 64
    batch_size: int | None = None
    device: str = "auto"
    period: float | None = None
    rescale: bool = True
    amp: bool = True
    invert: bool = False
    compile: bool = False  # torch.compile the network (in-memory files; large files go lazily, as they are)
    dtype: str = "float32"
    check: bool = False
    refit: bool = True  # each column's height refit to the data (refit_columns; in-memory files)
    overwrite: bool = False
    model_label: str = "bundled default"


@dataclass
class FileResult:
    """What became of one input: its outputs, the lines to show, and the error if it failed."""

    source: str
    outputs: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # for stdout
    notes: list[str] = field(default_factory=list)  # for stderr
    error: str | None = None
    skipped: bool = False  # every output already existed

    def to_dict(self) -> dict:
        return asdict(self)


def is_large(path: Path) -> bool:
    """Whether ``path`` is denoised lazily and written as zarr: a zarr store, or a TIFF above LARGE_PX pixels."""
    from .io import LARGE_PX, is_zarr_path, read_tiff_header

    if is_zarr_path(path):
        return True
    try:
        shape = read_tiff_header(path).shape
    except Exception:  # noqa: BLE001 - reading it properly says what is wrong
        return False
    n = 1
    for s in shape:
        n *= s
    return n > LARGE_PX


def outputs_for(path: Path, out_dir: Path, check: bool, large: bool) -> list[Path]:
    """The files a complete run writes for ``path``: the result, and the consistency map with ``check`` (not for large)."""
    stem = path.name[: -len(".zarr")] if path.name.lower().endswith(".zarr") else path.stem
    if large:
        return [out_dir / f"{stem}_denoised.zarr"]
    return [out_dir / f"{stem}_denoised.tif"] + ([out_dir / f"{stem}_consistency.tif"] if check else [])


def remove_partials(targets: list[Path]) -> int:
    """Remove the temporary files an interrupted write left beside ``targets`` (``.NAME.*.part``); returns how many."""
    import shutil

    n = 0
    for t in targets:
        for p in t.parent.glob(f".{t.name}.*.part") if t.parent.is_dir() else ():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
    return n


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load(model: str | None):
    from .inference import resolve_model

    return resolve_model(model)


def denoise_file(path, out_dir, model=None, opts: FileOptions = FileOptions(), progress=None) -> FileResult:
    """Denoise one input file into ``out_dir`` and return what happened; never raises for a bad file (the error is in
    the result). ``model``: a module, a checkpoint path or None (the bundled model; paths load once per process).
    ``progress(event)`` receives the in-memory path's :class:`~.inference.Progress` events."""
    import numpy as np

    from .consistency import ConsistencyError, check, in_denoising
    from .inference import DenoiseWarning, iter_denoise
    from .io import ImageFileError, read_image, read_lazy, write_tiff, write_zarr
    from .jobs import drive, thread_warnings
    from .refit import refit_columns

    path, out_dir = Path(path), Path(out_dir)
    res = FileResult(str(path))
    large = is_large(path)
    targets = outputs_for(path, out_dir, opts.check, large)
    try:
        # an empty file (another program's crash, a full disk) holds nothing: it is redone, not taken as complete
        empty = [t for t in targets if t.is_file() and t.stat().st_size == 0]
        present = [t for t in targets if t.exists() and t not in empty]
        if empty and not opts.overwrite:
            res.notes.append(f"{path.name}: note: {', '.join(repr(str(t)) for t in empty)} "
                             f"{'is' if len(empty) == 1 else 'are'} empty (0 bytes) and will be written again")
            for t in empty:
                t.unlink()
        if present and not opts.overwrite:
            if len(present) == len(targets):
                res.skipped = True
                res.outputs = [str(t) for t in targets]
                res.lines.append(f"{path.name}: already complete in {out_dir}, skipped (--overwrite redoes it)")
                return res
            raise FileExistsError(f"'{present[0]}' exists but not the rest of this file's outputs; use --overwrite to "
                                  "replace it")
        net = model if not isinstance(model, (str, Path)) and model is not None else _load(None if model is None else str(model))
        # the core's notes through this thread's own channel (files may be denoised in several threads at once)
        with warnings.catch_warnings(record=True) as caught, thread_warnings(caught.append):
            warnings.simplefilter("always", DenoiseWarning)
            if large:
                from .lazy import denoise_lazy

                arr, pixel_size = read_lazy(path)
                if opts.compile:
                    res.notes.append(f"{path.name}: note: --compile does not apply to a large input read lazily: its "
                                     "chunks go through the network as it is")
                with _LOCK:
                    result = denoise_lazy(arr, net, tile=opts.tile, overlap=opts.overlap, batch_size=opts.batch_size,
                                          device=opts.device, period=opts.period, rescale=opts.rescale, amp=opts.amp,
                                          invert=opts.invert)
                write_zarr(targets[0], result, pixel_size=pixel_size, overwrite=opts.overwrite,
                           attrs={"source": str(path), "model": opts.model_label})
                if opts.check:
                    res.notes.append(f"{path.name}: note: --check is not run on lazily denoised (large) inputs")
                if opts.refit:
                    res.notes.append(f"{path.name}: note: column heights are not refit to the data on lazily denoised "
                                     "(large) inputs: the output is the network's")
                res.lines.append(f"{path.name} -> {targets[0]}")
            else:
                img = read_image(path)
                if img.original_dtype == "bool":
                    raise ImageFileError(f"'{path.name}' holds a binary (true/false) image, such as a mask, not "
                                         "detector counts: denoise the microscope image itself")
                res.notes += [f"{path.name}: note: {n}" for n in img.notes]
                with _LOCK:
                    result = drive(iter_denoise(img.data, net, tile=opts.tile, overlap=opts.overlap, batch_size=opts.batch_size,
                                                device=opts.device, period=opts.period, rescale=opts.rescale, amp=opts.amp,
                                                invert=opts.invert, compile=opts.compile), progress)
                refit = None
                if opts.refit:
                    try:
                        refit = refit_columns(img.data, result, invert=opts.invert)
                        result = refit.image
                    except ConsistencyError as exc:  # the network's output is written as it is, and the user told
                        res.notes.append(f"{path.name}: note: column heights not refit (the network's output is written "
                                         f"as it is): {in_denoising(exc)}")
                cons, cons_error = None, None
                if opts.check:
                    try:
                        cons = check(img.data, result)
                    except ConsistencyError as exc:  # the denoised output is still written
                        cons_error = exc
                write_tiff(targets[0], result, pixel_size=img.pixel_size, dtype=opts.dtype, overwrite=opts.overwrite,
                           axes=img.axes, description={"source": str(path), "model": opts.model_label,
                                                       "refit": refit.summary() if refit is not None else None})
                res.lines.append(f"{path.name} -> {targets[0]}")
                if opts.dtype == "uint16" and (missing := int(np.isnan(result).sum())):
                    res.notes.append(f"{path.name}: note: {missing} NaN pixel(s) are 0 in the uint16 file (the lowest "
                                     "value: an integer type holds no NaN); --dtype float32 keeps them NaN")
                if refit is not None:
                    res.lines.append(f"{path.name}: {refit.text()}")
                res.outputs.append(str(targets[0]))
                if cons_error is not None:
                    raise ConsistencyError(f"consistency check could not run: {in_denoising(cons_error)}")
                if cons is not None:
                    write_tiff(targets[1], cons.z, pixel_size=img.pixel_size, overwrite=opts.overwrite, axes=img.axes,
                               description={"source": str(path), "denoised": str(targets[0]), "consistency": cons.summary()})
                    res.outputs.append(str(targets[1]))
                    res.lines.append(f"{path.name}: consistency: {cons.text()}")
        res.notes += [f"{path.name}: note: {w.message}" for w in caught if issubclass(w.category, DenoiseWarning)]
        if large:
            res.outputs.append(str(targets[0]))
    except (ImageFileError, FileExistsError, ValueError, TypeError, MemoryError, ConsistencyError) as exc:
        res.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - anything one file raises must not end the batch
        res.error = f"unexpected error ({type(exc).__name__}): {exc}"
    return res
