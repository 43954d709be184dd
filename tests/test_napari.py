"""The plugin as a user meets it: in a real napari viewer (under Xvfb in CI)."""

import numpy as np
import pytest

from napari_emdenoise.io import read_tiff

PLUGIN = "napari-emdenoise"


def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution(PLUGIN)
    pm.validate_imports()
    assert pm.name == PLUGIN
    assert {c.key for c in pm.contributions.sample_data} == {"clean_lattice", "noisy_dented", "noisy_with_truth", "specimen"}
    assert {w.display_name for w in pm.contributions.widgets} == {"Denoise", "Dent mask", "Target set", "Train", "Scores"}


def test_open_16bit_tiff_gives_image_layer_with_scale(make_napari_viewer, uint16_tiff):
    path, data = uint16_tiff
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = viewer.layers[path.stem]
    assert layer._type_string == "image"
    assert layer.data.shape == (48, 64)
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert layer.metadata["original_dtype"] == "uint16"
    assert tuple(layer.scale) == pytest.approx((0.025, 0.025))
    assert [str(u) for u in layer.units] == ["nanometer", "nanometer"]


def test_upper_case_extension_opens(make_napari_viewer, uint16_tiff, tmp_path):
    path, data = uint16_tiff
    upper = tmp_path / "SCAN.TIF"
    upper.write_bytes(path.read_bytes())
    viewer = make_napari_viewer()
    viewer.open(str(upper), plugin=PLUGIN)
    assert viewer.layers["SCAN"].data.shape == data.shape


def test_non_tiff_is_declined_so_napari_can_ask_others(tmp_path):
    from napari_emdenoise._reader import napari_get_reader

    assert napari_get_reader(str(tmp_path / "image.png")) is None
    assert napari_get_reader(str(tmp_path / "data.npy")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    assert callable(napari_get_reader(str(tmp_path / "a.tif")))


def test_each_bad_file_gives_its_clear_error_in_the_viewer(make_napari_viewer, bad_files):
    viewer = make_napari_viewer()
    for kind, (path, words) in bad_files.items():
        with pytest.raises(Exception) as info:
            viewer.open(str(path), plugin=PLUGIN)
        text = str(info.value) + str(info.value.__cause__ or "")
        assert words in text and path.name in text, (kind, text)
    assert len(viewer.layers) == 0


@pytest.mark.parametrize("key, name", [("clean_lattice", "clean lattice"), ("noisy_dented", "noisy dented"),
                                       ("specimen", "SrTiO3 with vacancies")])
def test_sample_data_loads(make_napari_viewer, key, name):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    layer = viewer.layers[name]
    assert layer.data.shape == (512, 512)
    assert np.isfinite(layer.data).all() and layer.data.std() > 0
    assert tuple(layer.scale) == pytest.approx((0.02, 0.02))


def test_writer_saves_float32_with_pixel_size(make_napari_viewer, uint16_tiff, tmp_path):
    path, data = uint16_tiff
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    out = tmp_path / "saved.tif"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out)]
    img = read_tiff(out)
    assert img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, data.astype(np.float32))
    assert img.pixel_size == pytest.approx((0.025, 0.025))


def test_a_zarr_store_opens_as_a_lazy_layer(make_napari_viewer, tmp_path):
    import dask.array as da

    from napari_emdenoise.io import write_zarr

    data = np.arange(3 * 64 * 80, dtype=np.float32).reshape(3, 64, 80)
    write_zarr(tmp_path / "series.zarr", da.from_array(data, chunks=(1, 64, 80)), pixel_size=(0.05, 0.05))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "series.zarr"), plugin="napari-emdenoise")
    layer = layers[0]
    assert layer.name == "series" and isinstance(layer.data, da.Array) and layer.data.shape == (3, 64, 80)
    assert tuple(layer.scale) == pytest.approx((1.0, 0.05, 0.05))
    np.testing.assert_array_equal(np.asarray(layer.data[2]), data[2])


def test_a_ser_file_opens_with_its_pixel_size(make_napari_viewer):
    from pathlib import Path

    ser = Path(__file__).resolve().parents[2] / "shared" / "formats" / "16x16_STEM_BF_DF_acquire_1.ser"
    if not ser.is_file():
        pytest.skip("the real TIA sample lives in ../shared/formats")
    viewer = make_napari_viewer()
    layer = viewer.open(str(ser), plugin="napari-emdenoise")[0]
    assert layer.data.shape == (16, 16) and tuple(layer.scale) == pytest.approx((21.51, 21.51), rel=1e-3)
