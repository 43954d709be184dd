import errno
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_emdenoise.io import ImageFileError, read_tiff, write_tiff


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "float32", "float64"])
def test_every_supported_dtype_roundtrips_unchanged(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((20, 30)) * 200).astype(dtype)
    path = tmp_path / f"img_{dtype}.tif"
    tifffile.imwrite(path, data)
    img = read_tiff(path)
    assert img.data.dtype == np.dtype(dtype)
    assert img.original_dtype == dtype
    assert img.metadata["original_dtype"] == dtype
    np.testing.assert_array_equal(img.data, data)
    assert img.name == f"img_{dtype}"


def test_imagej_pixel_size_in_nm(uint16_tiff):
    path, data = uint16_tiff
    img = read_tiff(path)
    assert img.pixel_size == pytest.approx((0.025, 0.025))
    assert img.unit == "nm"
    assert img.scale() == pytest.approx((0.025, 0.025))
    assert img.metadata["pixel_size_source"] == "ImageJ"


@pytest.mark.parametrize("unit, factor", [("nm", 1.0), ("\\u00C5", 0.1), ("micron", 1000.0), ("\\u00B5m", 1000.0)])
def test_imagej_units_convert_to_nm(tmp_path, unit, factor):
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.float32), imagej=True, resolution=(4.0, 2.0), metadata={"unit": unit})
    img = read_tiff(path)
    assert img.pixel_size == pytest.approx((0.5 * factor, 0.25 * factor))  # (y, x)


def test_resolution_tags_in_centimetres(tmp_path):
    path = tmp_path / "cm.tif"
    # 2e8 px per cm = 0.05 nm per px
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), resolution=(2e8, 2e8), resolutionunit="CENTIMETER")
    assert read_tiff(path).pixel_size == pytest.approx((0.05, 0.05))


def test_default_72_dpi_is_not_a_pixel_size(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    img = read_tiff(path)
    assert img.pixel_size is None and img.scale() == (1.0, 1.0)


def test_ome_pixel_size(tmp_path):
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), ome=True,
                     metadata={"PhysicalSizeX": 0.03, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.04, "PhysicalSizeYUnit": "nm"})
    img = read_tiff(path)
    assert img.pixel_size == pytest.approx((0.04, 0.03))
    assert img.metadata["pixel_size_source"] == "OME-XML"


def test_rgb_export_becomes_one_grey_channel_with_a_note(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.stack([grey] * 3, axis=-1), photometric="rgb")
    img = read_tiff(path)
    assert img.data.shape == (8, 8)
    np.testing.assert_array_equal(img.data, grey)
    assert img.metadata["converted_from_rgb"] is True
    assert any("RGB" in n for n in img.notes)


def test_multipage_stack_is_3d(tmp_path):
    stack = np.random.default_rng(1).integers(0, 1000, (5, 16, 12)).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    img = read_tiff(path)
    assert img.data.shape == (5, 16, 12)
    assert img.scale() == (1.0, 1.0, 1.0)


def test_each_bad_file_gives_one_clear_error_naming_it(bad_files):
    for kind, (path, words) in bad_files.items():
        with pytest.raises(ImageFileError) as info:
            read_tiff(path)
        msg = str(info.value)
        assert path.name in msg, kind
        assert words in msg, (kind, msg)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageFileError, match="no such file"):
        read_tiff(tmp_path / "nope.tif")
    with pytest.raises(ImageFileError, match="folder"):
        read_tiff(tmp_path)


def test_write_float32_keeps_values_and_pixel_size(tmp_path):
    data = np.random.default_rng(2).normal(size=(10, 14)).astype(np.float64)
    path = write_tiff(tmp_path / "out.tif", data, pixel_size=(0.02, 0.03))
    img = read_tiff(path)
    assert img.data.dtype == np.float32
    np.testing.assert_allclose(img.data, data.astype(np.float32))
    assert img.pixel_size == pytest.approx((0.02, 0.03))


def test_write_uint16_maps_floats_and_records_the_mapping(tmp_path):
    data = np.linspace(-1.0, 3.0, 100, dtype=np.float32).reshape(10, 10)
    path = write_tiff(tmp_path / "u16.tif", data, dtype="uint16")
    img = read_tiff(path)
    assert img.data.dtype == np.uint16
    assert img.data.min() == 0 and img.data.max() == 65535
    mapping = json.loads(img.metadata["imagej"]["Info"])["uint16_mapping"]
    restored = img.data * mapping["scale"] + mapping["offset"]
    np.testing.assert_allclose(restored, data, atol=4 / 65535 * 1.01)
    ints = np.arange(12, dtype=np.int32).reshape(3, 4) * 1000
    np.testing.assert_array_equal(read_tiff(write_tiff(tmp_path / "i.tif", ints, dtype="uint16")).data, ints)


def test_write_never_overwrites_unless_asked(tmp_path):
    path = write_tiff(tmp_path / "a.tif", np.ones((4, 4)))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_tiff(path, np.zeros((4, 4)))
    assert read_tiff(path).data.max() == 1
    write_tiff(path, np.zeros((4, 4)), overwrite=True)
    assert read_tiff(path).data.max() == 0


def test_full_disk_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    path = write_tiff(tmp_path / "keep.tif", np.full((4, 4), 7.0))
    before = path.read_bytes()

    def full_disk(file, *a, **k):
        with open(file, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    with pytest.raises(ImageFileError, match="No space left on device"):
        write_tiff(path, np.zeros((4, 4)), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = write_tiff(tmp_path / "perm.tif", np.ones((4, 4)))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_full_disk_says_disk_full_and_changes_nothing(tmp_path, monkeypatch):
    import errno

    import tifffile

    from napari_emdenoise.io import ImageFileError

    target = tmp_path / "out.tif"
    write_tiff(target, np.ones((16, 16), np.float32))
    before = target.read_bytes()

    def full(*args, **kwargs):
        raise OSError("655360 requested and 22400 written")  # what numpy's tofile says on a full disk

    import collections

    import napari_emdenoise.io as io_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(io_module.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))  # nearly full
    monkeypatch.setattr(tifffile, "imwrite", full)
    with pytest.raises(ImageFileError, match="disk full") as info:
        write_tiff(target, np.zeros((256, 256), np.float32), overwrite=True)
    assert "MB needed" in str(info.value) and "MB free" in str(info.value)
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.part"))

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", enospc)
    with pytest.raises(ImageFileError, match="disk full"):
        write_tiff(target, np.zeros((16, 16), np.float32), overwrite=True)


def test_a_pipe_named_like_a_tiff_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "x.tif"
    os.mkfifo(fifo)
    with pytest.raises(ImageFileError, match="not a regular file"):
        read_tiff(fifo)


@pytest.mark.parametrize("shape, axes, want", [
    ((3, 2, 32, 32), "ZCYX", "ZCYX"), ((2, 3, 32, 32), "ZTYX", "ZTYX"), ((2, 2, 2, 2, 2, 32, 32), None, "QQQQQYX"),
    ((4, 32, 32), None, "ZYX"), ((2, 1, 32, 32), "TZYX", "TYX"),
])
def test_nd_files_keep_shape_axes_and_pixel_size(tmp_path, shape, axes, want):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    path = write_tiff(tmp_path / "nd.tif", data, pixel_size=(0.05, 0.04), axes=axes)
    img = read_tiff(path)
    assert img.axes == want and img.data.shape == tuple(n for n in shape if n > 1 or len(want) == len(shape))
    assert np.array_equal(img.data.reshape(shape), data) and img.pixel_size == pytest.approx((0.05, 0.04))


def test_a_file_with_two_series_says_which_was_read(tmp_path):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((32, 32), np.uint16))
        tw.write(np.ones((16, 16), np.uint16))
    img = read_tiff(path)
    assert img.data.shape == (32, 32) and any("2 image series" in n and "the first" in n for n in img.notes)


# --------------------------------------------------------------------------- microscope formats (../shared/formats)
FORMATS = Path(__file__).resolve().parents[2] / "shared" / "formats"
needs_formats = pytest.mark.skipif(not FORMATS.is_dir(), reason="the real DM/TIA/EMD sample files live in ../shared/formats")


@needs_formats
@pytest.mark.parametrize("name, shape, dtype, pixel", [
    ("16x16_STEM_BF_DF_acquire_1.ser", (16, 16), "uint16", 21.51),
    ("16x16_STEM_BF_DF_acquire.emi", (16, 16), "uint16", 21.51),
    ("test-1.dm3", (2, 2), "int16", None),
    ("test-2.dm4", (2, 2), "float32", None),
    ("example_image.emd", (3, 3), "int32", None),
])
def test_microscope_files_read_with_their_pixel_size(name, shape, dtype, pixel):
    from napari_emdenoise.io import read_image

    img = read_image(FORMATS / name)
    assert img.data.shape == shape and str(img.data.dtype) == dtype
    if pixel is None:
        assert img.pixel_size is None and any("no pixel size" in n for n in img.notes)
    else:
        assert img.pixel_size == pytest.approx((pixel, pixel), rel=1e-3) and img.unit == "nm"
    if name.endswith(".emi"):  # two detectors: which one was read is said
        assert any("holds 2 images" in n for n in img.notes)


@needs_formats
def test_a_microscope_file_denoises_from_the_cli_with_its_pixel_size(tmp_path, capsys):
    import shutil

    from napari_emdenoise.cli import main
    from napari_emdenoise.io import read_tiff

    ser = tmp_path / "scan.ser"
    shutil.copyfile(FORMATS / "16x16_STEM_BF_DF_acquire_1.ser", ser)
    assert main(["denoise", str(ser), "-o", str(tmp_path / "out"), "--tile", "0", "--no-rescale"]) == 0
    out = read_tiff(tmp_path / "out" / "scan_denoised.tif")
    assert out.data.shape == (16, 16) and out.pixel_size == pytest.approx((21.51, 21.51), rel=1e-3)


def test_a_damaged_microscope_file_gives_one_clear_message(tmp_path):
    from napari_emdenoise.io import ImageFileError, read_image

    for suffix in (".dm3", ".ser", ".emd"):
        bad = tmp_path / f"bad{suffix}"
        bad.write_bytes(b"\x00\x01 not a microscope file" * 10)
        with pytest.raises(ImageFileError, match=f"Cannot read 'bad{suffix}'.*corrupt"):
            read_image(bad)
    with pytest.raises(ImageFileError, match="no such file"):
        read_image(tmp_path / "missing.dm4")


def test_write_zarr_keeps_every_pixel_of_unevenly_chunked_arrays(tmp_path):
    import dask.array as da

    from napari_emdenoise.io import read_lazy, write_zarr

    x = np.random.default_rng(0).random((2000, 64)).astype(np.float32) + 1
    arr = da.from_array(x, chunks=((20, 10, 34) * 31 + (16,), (64,)))  # blocks that would share zarr chunks
    path = write_zarr(tmp_path / "w.zarr", arr, pixel_size=0.1)
    back, size = read_lazy(path)
    np.testing.assert_array_equal(back.compute(), x)
    assert size == (0.1, 0.1)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_zarr(path, arr)


def test_without_the_optional_readers_a_dm3_file_says_how_to_get_them(tmp_path, monkeypatch):
    import sys

    from napari_emdenoise.io import ImageFileError, read_image

    path = tmp_path / "scan.dm3"
    path.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", None)  # as if rosettasciio were not installed
    with pytest.raises(ImageFileError, match=r"napari-emdenoise\[formats\]"):
        read_image(path)
