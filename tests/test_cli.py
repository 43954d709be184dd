import csv
import hashlib
import json

import numpy as np
import pytest

from napari_emdenoise.cli import build_parser, main
from napari_emdenoise.io import read_tiff, write_tiff
from napari_emdenoise.simulate import simulate


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_simulate_writes_pairs_and_parameters(tmp_path):
    out = tmp_path / "sim"
    rc = main(["simulate", "-o", str(out), "--n", "3", "--size", "64x80", "--period", "10", "--dose", "8",
               "--pixel-size", "0.02", "--seed", "4"])
    assert rc == 0
    for sub in ("noisy", "clean", "dent"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["sim_0000.tif", "sim_0001.tif", "sim_0002.tif"]
    img = read_tiff(out / "noisy" / "sim_0001.tif")
    assert img.data.shape == (64, 80)
    assert img.pixel_size == pytest.approx((0.02, 0.02))
    meta = json.loads((out / "simulate.json").read_text())
    assert meta["params"]["period"] == 10 and meta["params"]["dose"] == 8
    assert [r["seed"] for r in meta["images"]] == [4, 5, 6]
    pos = np.loadtxt(out / "positions" / "sim_0000.csv", delimiter=",", skiprows=1)
    assert pos.shape[1] == 3 and len(pos) == meta["images"][0]["n_columns"]


def test_simulate_same_seed_same_bytes(tmp_path):
    args = ["--n", "2", "--size", "48", "--row-offset", "0.5", "--jitter", "0.2", "--read-noise", "1", "--seed", "9"]
    assert main(["simulate", "-o", str(tmp_path / "a"), *args]) == 0
    assert main(["simulate", "-o", str(tmp_path / "b"), *args]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert main(["simulate", "-o", str(tmp_path / "c"), *args[:-1], "10"]) == 0
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["simulate", "-o", str(out), "--n", "1", "--size", "32"]) == 0
    before = _digest(out)
    assert main(["simulate", "-o", str(out), "--n", "1", "--size", "32", "--seed", "3"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _digest(out) == before
    assert main(["simulate", "-o", str(out), "--n", "1", "--size", "32", "--seed", "3", "--overwrite"]) == 0
    assert _digest(out) != before


def test_simulate_bad_parameter_is_one_line(tmp_path, capsys):
    assert main(["simulate", "-o", str(tmp_path / "x"), "--dose", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dose must be positive" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_info_reports_files_and_fails_on_bad_ones(tmp_path, uint16_tiff, bad_files, capsys):
    good, data = uint16_tiff
    assert main(["info", "--json", str(good)]) == 0
    rep = json.loads(capsys.readouterr().out)[0]
    assert rep["shape"] == [48, 64] and rep["dtype"] == "uint16"
    assert rep["pixel_size_nm"] == pytest.approx([0.025, 0.025])
    assert rep["max"] == data.max()
    bad, words = bad_files["truncated"]
    assert main(["info", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert good.name in captured.out and words in captured.err


def test_info_without_files_lists_the_environment(capsys):
    assert main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    import torch

    from napari_emdenoise import __version__

    assert env["napari-emdenoise"] == __version__ and env["torch"] == torch.__version__
    assert env["devices"][0] == "cpu"
    assert any(d.startswith("cuda:0 (") for d in env["devices"]) == torch.cuda.is_available()
    assert main(["info"]) == 0
    assert f"devices: {env['devices']}" in capsys.readouterr().out


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def test_every_option_of_every_subcommand_is_described():
    parser = build_parser()
    subs = _subparsers(parser)
    assert {"simulate", "info", "denoise", "mask", "synth", "train", "demo", "bench"} <= set(subs)
    for name, sub in subs.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name}: {action.dest} has no help"
            for opt in action.option_strings:
                assert opt in text, f"{name}: {opt} missing from --help"


def test_help_exits_cleanly(capsys):
    for argv in (["--help"], *([c, "--help"] for c in ("simulate", "info", "denoise", "mask", "synth", "train", "demo", "bench"))):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    assert "--dose" in capsys.readouterr().out


def test_denoise_many_files_reports_failures_and_continues(tmp_path, trained_model, capsys):
    sim_dir = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim_dir), "--n", "2", "--size", "160x200", "--period", "12",
                 "--pixel-size", "0.03"]) == 0
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    inputs = [str(p) for p in sorted((sim_dir / "noisy").glob("*.tif"))] + [str(bad)]
    out = tmp_path / "out"
    rc = main(["denoise", *inputs, "-o", str(out), "--model", str(trained_model), "--tile", "128", "--overlap", "32"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.tif: error" in captured.err and "1 of 3 file(s) failed" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["sim_0000_denoised.tif", "sim_0001_denoised.tif"]
    res = read_tiff(out / "sim_0000_denoised.tif")
    noisy = read_tiff(sim_dir / "noisy" / "sim_0000.tif").data
    clean = read_tiff(sim_dir / "clean" / "sim_0000.tif").data
    assert res.data.shape == noisy.shape and res.pixel_size == pytest.approx((0.03, 0.03))
    assert np.mean((res.data - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    # a second run skips what is complete and keeps it, unless --overwrite
    before = (out / "sim_0000_denoised.tif").read_bytes()
    assert main(["denoise", inputs[0], "-o", str(out), "--model", str(trained_model)]) == 0
    captured = capsys.readouterr()
    assert "sim_0000.tif: already complete" in captured.out and "--overwrite redoes it" in captured.out
    assert "1 of 1 file(s) were already complete and skipped" in captured.err
    assert (out / "sim_0000_denoised.tif").read_bytes() == before
    # an empty output (another program's crash, a full disk) is not taken for a complete one: it is written again
    (out / "sim_0001_denoised.tif").write_bytes(b"")
    assert main(["denoise", inputs[1], "-o", str(out), "--model", str(trained_model)]) == 0
    captured = capsys.readouterr()
    assert "is empty (0 bytes) and will be written again" in captured.out + captured.err
    assert read_tiff(out / "sim_0001_denoised.tif").data.shape == noisy.shape


def test_denoise_check_writes_a_consistency_map_and_a_summary_line(tmp_path, trained_model, capsys):
    from napari_emdenoise import check

    sim_dir = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim_dir), "--n", "1", "--size", "160x200", "--period", "12",
                 "--pixel-size", "0.03"]) == 0
    stack = np.stack([simulate(size=96, period=12, dose=8, seed=s).noisy for s in (1, 2)])
    write_tiff(tmp_path / "series.tif", stack, pixel_size=0.05)
    inputs = [str(sim_dir / "noisy" / "sim_0000.tif"), str(tmp_path / "series.tif")]
    out = tmp_path / "out"
    model = ["--model", str(trained_model), "--tile", "128", "--overlap", "32"]
    rc = main(["denoise", *inputs, "-o", str(out), *model, "--check"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["series_consistency.tif", "series_denoised.tif",
                                                     "sim_0000_consistency.tif", "sim_0000_denoised.tif"]
    noisy = read_tiff(sim_dir / "noisy" / "sim_0000.tif").data
    cons = read_tiff(out / "sim_0000_consistency.tif")
    assert cons.data.shape == noisy.shape and cons.data.dtype == np.float32
    assert cons.pixel_size == pytest.approx((0.03, 0.03))
    expected = check(noisy, read_tiff(out / "sim_0000_denoised.tif").data)
    assert f"sim_0000.tif: consistency: {expected.text()}" in captured.out.splitlines()
    np.testing.assert_allclose(cons.data, expected.z)
    series = read_tiff(out / "series_consistency.tif")
    assert series.data.shape == (2, 96, 96) and series.data.dtype == np.float32
    assert series.pixel_size == pytest.approx((0.05, 0.05))
    assert any(line.startswith("series.tif: consistency: ") for line in captured.out.splitlines())

    # an existing consistency map without --overwrite: the file stops before anything is written
    (out / "sim_0000_denoised.tif").unlink()
    before = (out / "sim_0000_consistency.tif").read_bytes()
    assert main(["denoise", inputs[0], "-o", str(out), *model, "--check"]) == 1
    err = capsys.readouterr().err
    assert "sim_0000_consistency.tif' exists but not the rest" in err and "--overwrite" in err
    assert not (out / "sim_0000_denoised.tif").exists()
    assert (out / "sim_0000_consistency.tif").read_bytes() == before
    assert main(["denoise", inputs[0], "-o", str(out), *model, "--check", "--overwrite"]) == 0
    assert (out / "sim_0000_denoised.tif").exists() and "sim_0000.tif: consistency: " in capsys.readouterr().out
    # without --check the map is neither needed nor touched
    assert main(["denoise", inputs[0], "-o", str(out), *model, "--overwrite"]) == 0
    assert "consistency" not in capsys.readouterr().out


def test_denoise_check_leaves_missing_pixels_out(tmp_path, trained_model, capsys):
    noisy = simulate(size=128, period=12, dose=8, seed=3).noisy
    noisy[10:12, 20:30] = np.nan  # denoise keeps NaN pixels NaN; the check leaves them out
    write_tiff(tmp_path / "holes.tif", noisy)
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "holes.tif"), "-o", str(out), "--model", str(trained_model), "--check"]) == 0
    z = read_tiff(out / "holes_consistency.tif").data
    assert np.isnan(z[10:12, 20:30]).all() and np.isfinite(z[20:, :]).all()
    assert "holes.tif: consistency: " in capsys.readouterr().out


def test_denoise_check_that_cannot_run_is_that_files_error(tmp_path, trained_model, capsys, monkeypatch):
    from napari_emdenoise import consistency

    def refuse(noisy, denoised, **kw):
        raise consistency.ConsistencyError("the output does not follow the data (slope -1, correlation -0.9)")

    monkeypatch.setattr(consistency, "check", refuse)
    write_tiff(tmp_path / "x.tif", simulate(size=128, period=12, dose=8, seed=3).noisy)
    out = tmp_path / "out"
    rc = main(["denoise", str(tmp_path / "x.tif"), "-o", str(out), "--model", str(trained_model), "--check"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "x.tif: error: consistency check could not run: the output does not follow the data" in captured.err
    assert "1 of 1 file(s) failed" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["x_denoised.tif"]  # the output itself is kept


def test_denoise_with_a_bad_model_is_one_line(tmp_path, capsys):
    model = tmp_path / "latest_net_G_A.pth"
    model.write_text("not weights")
    img = tmp_path / "x.tif"
    img.write_bytes(b"")
    assert main(["denoise", str(img), "-o", str(tmp_path / "o"), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a checkpoint" in err and "\n" not in err


def test_denoise_rejects_an_overlap_larger_than_half_the_tile(tmp_path, capsys):
    assert main(["denoise", "x.tif", "-o", str(tmp_path), "--tile", "128", "--overlap", "100"]) == 2
    assert "--overlap" in capsys.readouterr().err


def test_mask_and_synth_build_a_target_set(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "192x224", "--period", "10", "--dents", "1",
                 "--dent-depth", "0.4"]) == 0
    masks = tmp_path / "masks"
    assert main(["mask", *map(str, sorted((sim / "noisy").glob("*.tif"))), "-o", str(masks)]) == 0
    assert "sim_0000.tif ->" in capsys.readouterr().out
    mask = read_tiff(masks / "sim_0000_mask.tif")
    assert mask.data.shape == (192, 224) and mask.data.max() <= 255 and mask.data.max() > 128
    assert main(["mask", str(sim / "noisy" / "sim_0000.tif"), "-o", str(tmp_path / "one.tif"), "--preset", "origin",
                 "--variant", "min"]) == 0
    info = json.loads(read_tiff(tmp_path / "one.tif").metadata["imagej"]["Info"])
    assert info["mask_params"]["window"] == 5 and info["mask_params"]["variant"] == "min"
    out = tmp_path / "set"
    rc = main(["synth", "--simulate", "--sim-period", "12", "--masks", str(masks), "--zoom", "20MX=16x14", "10MX=8x7",
               "--per-mask", "3", "--rotate", "270", "--noisy", str(sim / "noisy"), "-o", str(out)])
    assert rc == 0
    assert len(list((out / "trainB").glob("*.tif"))) == 2 * 2 * 3
    assert len(list((out / "trainA").glob("*.tif"))) == 2
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["complete"] and len(meta["files"]) == 14
    assert main(["synth", "--simulate", "--masks", str(masks), "--zoom", "20MX=16x14", "-o", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_synth_explains_a_bad_zoom_and_an_empty_mask_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["synth", "--simulate", "--masks", str(tmp_path / "empty"), "--zoom", "20MX=16x14", "-o", str(tmp_path / "o")]) == 2
    assert "holds no .tif files" in capsys.readouterr().err
    write_tiff(tmp_path / "m.tif", np.zeros((32, 32)))
    assert main(["synth", "--simulate", "--masks", str(tmp_path / "m.tif"), "--zoom", "20MX:16x14", "-o", str(tmp_path / "o")]) == 2
    assert "zoom must look like" in capsys.readouterr().err


def test_train_paired_from_simulate_then_denoise(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "3", "--size", "128", "--period", "12", "--dose", "5"]) == 0
    run_dir = tmp_path / "run"
    rc = main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(run_dir),
               "--mode", "paired", "--iters", "6", "--crop", "48", "--batch-size", "2", "--checkpoint-every", "3",
               "--model", "small", "--consistency", "0", "--ngf", "8", "--precision", "bf16", "--no-report"])
    assert rc == 0, capsys.readouterr().err
    assert (run_dir / "denoiser.safetensors").exists() and (run_dir / "loss.png").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["generator"]["ngf"], config["precision"]) == (8, "bf16")
    with open(run_dir / "loss_log.csv") as fh:
        assert len(fh.readlines()) == 7
    assert main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(run_dir)]) == 2
    assert "--resume" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["denoise", str(sim / "noisy" / "sim_0000.tif"), "-o", str(out), "--model",
                 str(run_dir / "denoiser.safetensors")]) == 0


def test_train_explains_bad_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("hello")
    assert main(["train", "--noisy", str(tmp_path / "empty"), "--clean", str(tmp_path / "txt"), "-o", str(tmp_path / "r")]) == 2
    assert "holds no .tif files" in capsys.readouterr().err
    write_tiff(tmp_path / "small.tif", np.zeros((40, 40)))
    assert main(["train", "--noisy", str(tmp_path / "small.tif"), "--clean", str(tmp_path / "small.tif"),
                 "-o", str(tmp_path / "r"), "--period", "10"]) == 2
    assert "smaller than the crop" in capsys.readouterr().err


def test_demo_writes_its_folder_with_scores(tmp_path, trained_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", str(trained_model), "--period", "12"]) == 0
    out = tmp_path / "emdenoise-demo"
    assert sorted(p.name for p in out.iterdir()) == ["demo.png", "input.tif", "output.tif", "scores.json", "truth.tif"]
    report = json.loads((out / "scores.json").read_text())
    assert report["output"]["psnr"] > report["input"]["psnr"] + 3
    assert "demo written to" in capsys.readouterr().out
    assert main(["demo", "--model", str(trained_model), "--period", "12"]) == 0  # a second run gets a new folder
    assert (tmp_path / "emdenoise-demo-2" / "demo.png").exists()


def test_bench_quick_scores_every_method(tmp_path, trained_model, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "-o", str(out), "--extra", str(trained_model)]) == 0
    printed = capsys.readouterr().out
    with open(out / "summary.csv") as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    assert {"noisy", "gaussian", "nlm", "fourier", "model", "denoiser"} <= set(summary)
    assert float(summary["model"]["psnr"]) > float(summary["gaussian"]["psnr"])  # the bundled model beats the filter
    with open(out / "bench.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4 * len(summary)
    assert (out / "bench.png").exists() and "| model |" in printed


def test_scenes_writes_a_varied_training_set_and_refuses_benchmark_seeds(tmp_path, capsys):
    from napari_emdenoise.scenes import make_scene, target, training_params

    out = tmp_path / "scenes"
    assert main(["scenes", "-o", str(out), "--n", "4", "--size", "64", "--seed", "3", "--period-range", "6", "10"]) == 0
    names = [f"scene_{i:05d}.tif" for i in range(4)]
    assert sorted(p.name for p in (out / "noisy").iterdir()) == names == sorted(p.name for p in (out / "clean").iterdir())
    noisy = read_tiff(out / "noisy" / names[1])
    assert noisy.data.dtype == np.uint16 and noisy.data.shape == (64, 64)
    meta = json.loads((out / "scenes.json").read_text())
    assert [s["seed"] for s in meta["scenes"]] == [3, 4, 5, 6]
    assert all(6 <= s["period"] <= 10 for s in meta["scenes"])
    # the clean file is the truth of that very noisy file, in its detector units
    scene = make_scene(training_params(4, size=64, periods=(6, 10)))
    np.testing.assert_array_equal(noisy.data, scene.noisy)
    np.testing.assert_allclose(read_tiff(out / "clean" / names[1]).data, target(scene), rtol=1e-6)
    assert main(["scenes", "-o", str(out), "--n", "1", "--size", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces the whole set: no stale pair of the old one stays
    assert main(["scenes", "-o", str(out), "--n", "2", "--size", "64", "--seed", "20", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "noisy").iterdir()) == names[:2] == sorted(p.name for p in (out / "clean").iterdir())
    # a partial set (no scenes.json, as a Ctrl-C leaves it) is refused as well; other files are never removed
    (out / "scenes.json").unlink()
    assert main(["scenes", "-o", str(out), "--n", "1", "--size", "64"]) == 2
    assert "partial scene set" in capsys.readouterr().err
    (out / "noisy" / "my_frame.tif").write_bytes(b"mine")
    assert main(["scenes", "-o", str(out), "--n", "1", "--size", "64", "--overwrite"]) == 2
    assert "other files" in capsys.readouterr().err and (out / "noisy" / "my_frame.tif").read_bytes() == b"mine"
    for bad in (["--dose-range", "1", "1000"], ["--dose-range", "1", "inf"], ["--period-range", "9", "4"], ["--size", "100000"]):
        assert main(["scenes", "-o", str(tmp_path / "x"), "--n", "1", *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert main(["scenes", "-o", str(tmp_path / "b"), "--n", "3", "--size", "64", "--seed", "8998"]) == 2
    err = capsys.readouterr().err
    assert "fidelity benchmark" in err and "\n" not in err.strip()
    assert not (tmp_path / "b" / "scenes.json").exists()


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_train_saves_a_checkpoint(tmp_path, signame):
    import os
    import signal
    import subprocess
    import sys
    import time

    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "96", "--period", "12", "--dose", "5"]) == 0
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "napari_emdenoise.cli", "train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"),
            "-o", str(run_dir), "--mode", "paired", "--iters", "100000", "--crop", "32", "--batch-size", "1", "--ngf", "4",
            "--model", "small", "--consistency", "0", "--checkpoint-every", "100000", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (run_dir / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # well inside the loop, most likely within an optimiser step
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and (run_dir / "checkpoint.pt").is_file()
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 1 and (run_dir / "denoiser.safetensors").is_file()
    with open(run_dir / "loss_log.csv") as fh:
        assert len(fh.readlines()) - 1 >= state["iteration"]  # every saved iteration is logged



def test_ten_interrupts_at_random_moments_then_resume_equal_the_uninterrupted_run(tmp_path):
    """Ctrl-C or SIGTERM at ten random moments (start-up, training, a checkpoint being written), each followed by
    --resume: every stop leaves a resumable folder and the end is bit for bit the uninterrupted run."""
    import os
    import random
    import signal
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "96", "--period", "12", "--dose", "5"]) == 0
    args = [sys.executable, "-m", "napari_emdenoise.cli", "train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"),
            "--mode", "paired", "--iters", "1200", "--crop", "32", "--batch-size", "1", "--ngf", "4", "--model", "small",
            "--consistency", "0", "--checkpoint-every", "100", "--no-report", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out, resume=False, stop_after=None, sig=signal.SIGINT):
        proc = subprocess.Popen(args + ["-o", str(out)] + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        if stop_after is not None:
            try:
                proc.wait(timeout=stop_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err

    assert run(tmp_path / "whole")[0] == 0
    rnd, out, resume, stops = random.Random(16), tmp_path / "stopped", False, []
    for _ in range(10):
        code, err = run(out, resume, stop_after=rnd.uniform(0.3, 4.0), sig=rnd.choice([signal.SIGINT, signal.SIGTERM]))
        # stopped cleanly (130), or had finished (0; -2/-15 when the signal came as Python was exiting): no traceback
        assert code in (0, 130, -2, -15) and "Traceback" not in err, err
        if out.exists():  # a stop before the first iteration leaves no folder; any folder left must resume
            resume = True
            state = torch.load(out / "checkpoint.pt", weights_only=True)
            stops.append(state["iteration"])
            with open(out / "loss_log.csv") as fh:
                assert len(fh.readlines()) - 1 == state["iteration"]  # the log ends where the checkpoint does
    assert run(out, resume)[0] == 0
    assert len(set(stops)) >= 5  # the stops fell at many different points of the run
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (tmp_path / "whole", out))
    assert a["iteration"] == b["iteration"] == 1200
    assert all(torch.equal(a["nets"][n][k], b["nets"][n][k]) for n in a["nets"] for k in a["nets"][n])
    da, db = load_file(tmp_path / "whole" / "denoiser.safetensors"), load_file(out / "denoiser.safetensors")
    assert all(torch.equal(da[k], db[k]) for k in da)
    assert (tmp_path / "whole" / "loss_log.csv").read_text() == (out / "loss_log.csv").read_text()


def test_denoise_batch_refuses_clashing_outputs_and_bad_tiles_before_any_work(tmp_path, trained_model, capsys):
    img = simulate(size=64, period=12, seed=0).noisy
    for sub in ("a", "b"):
        write_tiff(tmp_path / sub / "img.tif", img)
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "a" / "img.tif"), str(tmp_path / "b" / "img.tif"), "-o", str(out),
                 "--model", str(trained_model)]) == 2
    assert "would both be written" in capsys.readouterr().err and not out.exists()
    write_tiff(tmp_path / "x_denoised.tif", img)  # an input that a result would replace
    assert main(["denoise", str(tmp_path / "x.tif"), str(tmp_path / "x_denoised.tif"), "-o", str(tmp_path), "--overwrite",
                 "--model", str(trained_model)]) == 2
    assert "would replace the input" in capsys.readouterr().err
    for bad, words in ((["--tile", "3"], "--tile"), (["--batch-size", "0"], "--batch-size")):
        assert main(["denoise", str(tmp_path / "a" / "img.tif"), "-o", str(out), *bad]) == 2
        assert words in capsys.readouterr().err


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, trained_model):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from napari_emdenoise.checkpoints import CheckpointError, load_checkpoint

    sd = load_file(trained_model)
    with safe_open(str(trained_model), framework="pt") as f:
        meta = f.metadata()
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key][0] = float("nan")
    save_file(sd, tmp_path / "diverged.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_checkpoint(tmp_path / "diverged.safetensors")


def test_check_flags_another_programs_invented_atoms_and_refuses_a_foreign_pair(tmp_path, capsys):
    from napari_emdenoise.scenes import VACANCY_HEAVY, make_scene

    s = make_scene(kind="vacancies", size=192, period=12, dose=5, seed=21)
    w = s.weights.copy()
    vac = (s.labels == VACANCY_HEAVY) & (s.sublattice == 0)
    assert vac.sum() >= 1
    w[vac] = s.site_weights[vac]  # "another program" filled every heavy vacancy
    write_tiff(tmp_path / "data.tif", s.noisy, dtype="uint16")
    write_tiff(tmp_path / "filled.tif", s.render(w)[1])
    write_tiff(tmp_path / "truth.tif", s.expected)
    assert main(["check", str(tmp_path / "data.tif"), str(tmp_path / "truth.tif"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regions"] <= 1
    assert main(["check", str(tmp_path / "data.tif"), str(tmp_path / "filled.tif"), "-o", str(tmp_path / "z.tif")]) == 0
    out = capsys.readouterr().out
    assert "disagree" in out and "brighter in the output" in out and "z.tif" in out
    z = read_tiff(tmp_path / "z.tif").data
    rc = np.rint(s.positions[vac]).astype(int)
    assert z.shape == s.noisy.shape and (z[rc[:, 0], rc[:, 1]] < -4.5).mean() >= 0.9  # invented: output brighter
    # the z map is not written over an input or an existing file, and a foreign pair is refused in one line
    assert main(["check", str(tmp_path / "data.tif"), str(tmp_path / "filled.tif"), "-o", str(tmp_path / "data.tif")]) == 2
    assert "would replace an input" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "data.tif"), str(tmp_path / "filled.tif"), "-o", str(tmp_path / "z.tif")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    write_tiff(tmp_path / "small.tif", s.expected[:100])
    assert main(["check", str(tmp_path / "data.tif"), str(tmp_path / "small.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shape" in err


def test_train_by_default_fine_tunes_the_bundled_model_with_the_consistency_term(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "128", "--period", "12", "--dose", "5"]) == 0
    run_dir = tmp_path / "run"
    assert main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(run_dir), "--mode", "paired",
                 "--iters", "2", "--crop", "48", "--batch-size", "1"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "fidelity report" in out and "| dopants found |" in out and (run_dir / "fidelity_report.md").is_file()
    report = json.loads((run_dir / "fidelity_report.json").read_text())
    assert set(report["rows"]) == {"bundled", "trained"} and report["rows"]["bundled"]["dopants_found"] >= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["init"], config["lambda_consistency"], config["generator"]["ngf"], config["clip"], config["rescale"],
            config["lr"]) == ("bundled", 10.0, 32, 8.0, False, 5e-5)
    assert main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(tmp_path / "r2"),
                 "--ngf", "8"]) == 2
    assert "keeps its architecture" in capsys.readouterr().err


def test_train_self_supervised_from_noisy_frames_alone(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "96", "--period", "12", "--dose", "5"]) == 0
    assert main(["train", "--noisy", str(sim / "noisy"), "-o", str(tmp_path / "r0"), "--mode", "paired"]) == 2
    assert "--mode n2v" in capsys.readouterr().err
    assert main(["train", "--noisy", str(sim / "noisy"), "-o", str(tmp_path / "run"), "--mode", "n2v", "--model", "small",
                 "--consistency", "0", "--iters", "3", "--crop", "32", "--batch-size", "1", "--no-report"]) == 0
    with open(tmp_path / "run" / "loss_log.csv") as fh:
        assert fh.readline().strip() == "iteration,lr,N2V"


def test_a_5d_imagej_hyperstack_round_trips_through_denoise(tmp_path, trained_model):
    sims = [simulate(size=64, period=12, dose=5, seed=i).noisy for i in range(12)]
    stack = np.stack(sims).reshape(2, 3, 2, 64, 64).astype(np.float32)  # TZCYX
    write_tiff(tmp_path / "hyper.tif", stack, pixel_size=(0.021, 0.019), axes="TZCYX")
    src = read_tiff(tmp_path / "hyper.tif")
    assert src.data.shape == (2, 3, 2, 64, 64) and src.axes == "TZCYX" and src.pixel_size == pytest.approx((0.021, 0.019))
    assert main(["denoise", str(tmp_path / "hyper.tif"), "-o", str(tmp_path / "out"), "--model", str(trained_model),
                 "--tile", "0", "--check"]) == 0
    for name in ("hyper_denoised.tif", "hyper_consistency.tif"):
        out = read_tiff(tmp_path / "out" / name)
        assert out.data.shape == (2, 3, 2, 64, 64) and out.axes == "TZCYX", name
        assert out.pixel_size == pytest.approx((0.021, 0.019), rel=1e-6), name
    plane = read_tiff(tmp_path / "out" / "hyper_denoised.tif").data[1, 2, 0]
    assert np.corrcoef(plane.ravel(), stack[1, 2, 0].ravel())[0, 1] > 0.5  # each plane denoised in place, not shuffled


def test_a_missing_gpu_is_one_clear_message_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "1", "--size", "64"]) == 0
    capsys.readouterr()
    assert main(["train", "--mode", "paired", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o",
                 str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["denoise", str(sim / "noisy" / "sim_0000.tif"), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_compile_on_a_lazily_read_input_is_said_not_to_apply(tmp_path, trained_model, capsys):
    import dask.array as da

    from napari_emdenoise.io import write_zarr

    write_zarr(tmp_path / "big.zarr", da.from_array(simulate(size=(96, 128), period=12, dose=5, seed=4).noisy, chunks=(96, 64)))
    rc = main(["denoise", str(tmp_path / "big.zarr"), "-o", str(tmp_path / "out"), "--model", str(trained_model), "--compile"])
    out, err = capsys.readouterr()
    assert rc == 0 and (tmp_path / "out" / "big_denoised.zarr").is_dir()
    assert "--compile does not apply to a large input read lazily" in out + err


def test_denoise_refits_column_heights_unless_told_not_to(tmp_path, trained_model, capsys):
    from napari_emdenoise import denoise, refit_columns

    noisy = simulate(size=128, period=12, dose=4, seed=5).noisy
    write_tiff(tmp_path / "x.tif", noisy)
    model = ["--model", str(trained_model), "--tile", "128", "--overlap", "32"]
    assert main(["denoise", str(tmp_path / "x.tif"), "-o", str(tmp_path / "on"), *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    net = denoise(noisy, trained_model, tile=128, overlap=32)
    want = refit_columns(noisy, net)
    assert f"x.tif: {want.text()}" in lines and want.columns >= 50
    on = read_tiff(tmp_path / "on" / "x_denoised.tif")
    np.testing.assert_allclose(on.data, want.image, atol=1e-3 * float(np.ptp(net)))
    assert json.loads(on.metadata["imagej"]["Info"])["refit"]["columns"] == want.columns
    assert main(["denoise", str(tmp_path / "x.tif"), "-o", str(tmp_path / "off"), *model, "--no-refit"]) == 0
    assert "column heights" not in capsys.readouterr().out
    np.testing.assert_allclose(read_tiff(tmp_path / "off" / "x_denoised.tif").data, net, atol=1e-3 * float(np.ptp(net)))


def test_a_model_whose_output_does_not_follow_the_image_is_called_out(tmp_path, capsys):
    """The bundled weights as a bare .pth (what a training run writes as latest_net_G_A.pth, here away from its run) read
    as a reference tanh generator: the output has nothing to do with the image. The note blamed the user for a mixed-up
    pair the tool had made itself."""
    import torch
    from safetensors.torch import load_file

    from napari_emdenoise.inference import DEFAULT_MODEL

    torch.save({k: v.float() for k, v in load_file(str(DEFAULT_MODEL)).items()}, tmp_path / "bare.pth")
    write_tiff(tmp_path / "x.tif", simulate(size=128, period=10, dose=6, seed=3).noisy)
    rc = main(["denoise", str(tmp_path / "x.tif"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "bare.pth")])
    out = capsys.readouterr()
    assert rc == 0 and (tmp_path / "out" / "x_denoised.tif").is_file()
    assert "the model's output does not follow this image" in out.out + out.err
    assert "Do not use this result" in out.out + out.err
    assert "is it the denoised version of this very image" not in out.out + out.err
    tiny = tmp_path / "tiny.tif"
    write_tiff(tiny, simulate(size=16, period=4, dose=6, seed=3).noisy)
    main(["denoise", str(tiny), "-o", str(tmp_path / "out2")])
    out = capsys.readouterr()
    assert "too small to compare with its data (16 x 16 px; at least 24 x 24 px)" in out.out + out.err


def test_nan_pixels_in_a_uint16_output_are_said_to_be_zero(tmp_path, trained_model, capsys):
    noisy = simulate(size=96, period=12, dose=5, seed=2).noisy
    noisy[5:8, 5:9] = np.nan
    write_tiff(tmp_path / "h.tif", noisy)
    model = ["--model", str(trained_model)]
    assert main(["denoise", str(tmp_path / "h.tif"), "-o", str(tmp_path / "u"), *model, "--dtype", "uint16"]) == 0
    text = "".join(capsys.readouterr())
    assert "12 NaN pixel(s) are 0 in the uint16 file" in text and "--dtype float32 keeps them NaN" in text
    assert read_tiff(tmp_path / "u" / "h_denoised.tif").data[5:8, 5:9].max() == 0
    assert main(["denoise", str(tmp_path / "h.tif"), "-o", str(tmp_path / "f"), *model]) == 0
    assert "uint16 file" not in "".join(capsys.readouterr())


def test_denoise_refuses_a_binary_mask_with_one_line(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "mask.tif", np.random.default_rng(0).random((64, 64)) > 0.5)
    assert main(["denoise", str(tmp_path / "mask.tif"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "holds a binary (true/false) image, such as a mask, not detector counts" in err
    assert not (tmp_path / "out" / "mask_denoised.tif").exists()
