"""The Scores widget as a user runs it: sample with truth, a denoised layer, press Score."""

import numpy as np
import pytest
from scipy import ndimage

import napari_emdenoise._widgets.score as score_module
from napari_emdenoise._widgets.score import ScoreWidget
from napari_emdenoise.metrics import score


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-emdenoise", "noisy_with_truth")
    noisy = viewer.layers["noisy dented"].data
    viewer.add_image(ndimage.gaussian_filter(noisy.astype(np.float32), 1.0), name="noisy dented denoised")
    w = ScoreWidget(viewer)
    viewer.window.add_dock_widget(w)
    errors = []
    monkeypatch.setattr(score_module, "show_error", errors.append)
    return viewer, w, errors


def _run(w, qtbot):
    assert w.start() is not None
    qtbot.waitUntil(lambda: w._run.enabled, timeout=60_000)  # the worker has returned or failed


def test_scores_the_denoised_layer_against_the_truth(setup, qtbot):
    viewer, w, errors = setup
    assert w._output.value.name == "noisy dented denoised"  # picked without the user doing anything
    w._reference.value = viewer.layers["noisy dented truth"]
    w._dent.value = "noisy dented dent map"
    _run(w, qtbot)
    assert not errors
    got = viewer.layers["noisy dented denoised"].metadata["scores"]
    want = score(viewer.layers["noisy dented denoised"].data, viewer.layers["noisy dented truth"].data,
                 viewer.layers["noisy dented dent map"].data)
    assert got["psnr"] == pytest.approx(want.psnr) and got["dent_error"] == pytest.approx(want.dent_error)
    assert got["reference"] == "noisy dented truth"
    assert f"PSNR {want.psnr:.2f} dB" in w._result.value and "dent error" in w._result.value
    # the noisy input scores lower: the numbers tell the user the filter helped
    w._output.value = viewer.layers["noisy dented"]
    _run(w, qtbot)
    assert viewer.layers["noisy dented"].metadata["scores"]["psnr"] < got["psnr"] - 3


def test_a_reference_of_another_shape_is_explained(setup, qtbot):
    viewer, w, errors = setup
    viewer.add_image(np.zeros((100, 80), np.float32), name="other")
    w._reference.value = viewer.layers["other"]
    _run(w, qtbot)
    assert len(errors) == 1 and "same shape" in errors[0] and w._result.value == "not scored"
    assert "scores" not in viewer.layers["noisy dented denoised"].metadata


def test_an_empty_dent_map_is_refused_before_scoring(setup):
    viewer, w, errors = setup
    viewer.add_labels(np.zeros((512, 512), np.uint8), name="blank mask")
    w._reference.value = viewer.layers["noisy dented truth"]
    w._dent.value = "blank mask"
    assert w.start() is None
    assert "is empty" in errors[0]


def test_the_user_s_choice_stays_when_other_layers_come_and_go(setup):
    """Adding a points layer put the scored layer back to the last denoised one: the next Score went to another layer."""
    viewer, w, _ = setup
    w._output.value = viewer.layers["noisy dented"]
    viewer.add_points(np.array([[10.0, 10.0]]), name="marks")
    viewer.layers.remove("marks")
    assert w._output.value.name == "noisy dented"
    viewer.add_image(np.zeros((512, 512), np.float32), name="again denoised")  # a new result of Denoise is picked
    assert w._output.value.name == "again denoised"
