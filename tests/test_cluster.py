"""Batches on a dask.distributed cluster, re-runs that skip complete outputs, and interrupted runs."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_emdenoise.batch import FileOptions  # noqa: E402
from napari_emdenoise.cli import main  # noqa: E402
from napari_emdenoise.io import read_tiff, write_tiff  # noqa: E402
from napari_emdenoise.simulate import simulate  # noqa: E402


@pytest.fixture(scope="module")
def twenty(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    paths = []
    for i in range(20):
        p = folder / f"frame_{i:02d}.tif"
        write_tiff(p, simulate(size=96, period=12, dose=4, seed=i).noisy, pixel_size=0.04)
        paths.append(p)
    return paths


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_local_cluster_of_two_workers_denoises_twenty_files_and_a_rerun_rewrites_nothing(tmp_path, twenty, trained_model,
                                                                                          capsys):
    out = tmp_path / "out"
    args = ["denoise", *map(str, twenty), "-o", str(out), "--model", str(trained_model), "--tile", "0", "--cluster", "local:2"]
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    assert main(args) == 0, capsys.readouterr().err
    # the workers' thread limits do not leak into this process (later torch runs and subprocesses would inherit them)
    assert {k: os.environ.get(k) for k in threads} == threads
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:02d}_denoised.tif" for i in range(20)]
    res = read_tiff(out / "frame_07_denoised.tif")
    assert res.data.shape == (96, 96) and res.pixel_size == pytest.approx((0.04, 0.04))
    # the same result as in this process (the network's output with each column refit to the data, as by default)
    from napari_emdenoise import denoise, refit_columns

    frame = read_tiff(twenty[7]).data
    want = refit_columns(frame, denoise(frame, str(trained_model), tile=None)).image
    np.testing.assert_allclose(res.data, want, atol=1e-4 * float(np.ptp(want)))
    before = _mtimes(out)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "20 of 20 file(s) were already complete and skipped" in err
    assert _mtimes(out) == before


@pytest.fixture
def clean_env():
    """distributed's nannies set the workers' thread limits in this process's environment; later subprocesses (the
    training crash test) would inherit them and round differently."""
    from napari_emdenoise.cluster import _restore, _thread_env

    saved = _thread_env()
    yield
    _restore(saved)


def test_a_killed_worker_still_ends_with_all_outputs(tmp_path, twenty, trained_model, clean_env):
    from distributed import LocalCluster

    from napari_emdenoise.cluster import denoise_files

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        pids = [nanny.process.pid for nanny in cluster.workers.values()]  # the worker processes (their nannies restart them)
        results, killed = [], False
        for res in denoise_files(cluster.scheduler_address, twenty, out, trained_model, FileOptions(tile=None)):
            results.append(res)
            if not killed:  # the first file is done: kill a worker while the others are in flight
                os.kill(pids[0], signal.SIGKILL)
                killed = True
    assert killed and len(results) == 20
    assert [r.error for r in results if r.error] == []
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:02d}_denoised.tif" for i in range(20)]


def test_a_failing_file_is_listed_and_the_rest_go_on(tmp_path, twenty, trained_model, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    out = tmp_path / "out"
    rc = main(["denoise", str(twenty[0]), str(bad), str(twenty[1]), "-o", str(out), "--model", str(trained_model),
               "--cluster", "local:1"])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.tif: error" in err and "1 of 3 file(s) failed: bad.tif" in err
    assert sorted(p.name for p in out.iterdir()) == ["frame_00_denoised.tif", "frame_01_denoised.tif"]


@pytest.mark.parametrize("spec, words", [("local:0", "at least 1"), ("somewhere", "local:N"),
                                         ("tcp://127.0.0.1:9", "could not reach")])
def test_a_bad_cluster_is_one_clear_message(tmp_path, twenty, spec, words, capsys):
    assert main(["denoise", str(twenty[0]), "-o", str(tmp_path / "o"), "--cluster", spec]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_ctrl_c_leaves_only_complete_outputs(tmp_path):
    # enough work (the bundled model on 20 images of 256^2, about 0.5 s each here) that the signal lands mid-run
    twenty = []
    for i in range(20):
        twenty.append(tmp_path / "in" / f"frame_{i:02d}.tif")
        write_tiff(twenty[-1], simulate(size=256, period=12, dose=4, seed=i).noisy)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "napari_emdenoise.cli", "denoise", *map(str, twenty), "-o", str(out),
                             "--tile", "0"], env=env,
                            # a shell's background job inherits SIGINT ignored; a user's terminal delivers it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(p.suffix == ".tif" for p in out.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again" in err
    names = [p.name for p in out.iterdir()]
    assert names and all(n.endswith("_denoised.tif") for n in names), names  # no .part files
    assert len(names) < 20  # it was interrupted
    for n in names:
        assert read_tiff(out / n).data.shape == (256, 256)
    # the same command finishes the rest and skips what is complete
    assert main(["denoise", *map(str, twenty), "-o", str(out), "--tile", "0"]) == 0
    assert len(list(out.iterdir())) == 20


def test_a_zarr_input_is_denoised_chunk_by_chunk_on_the_cluster(tmp_path, twenty, trained_model, capsys):
    import dask.array as da

    from napari_emdenoise import denoise
    from napari_emdenoise.io import read_lazy, write_zarr

    img = simulate(size=(256, 300), period=12, dose=5, seed=4).noisy
    write_zarr(tmp_path / "montage.zarr", da.from_array(img, chunks=(128, 150)), pixel_size=(0.03, 0.03))
    out = tmp_path / "out"
    rc = main(["denoise", str(tmp_path / "montage.zarr"), str(twenty[0]), "-o", str(out), "--model", str(trained_model),
               "--tile", "128", "--overlap", "32", "--cluster", "local:2"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["frame_00_denoised.tif", "montage_denoised.zarr"]
    got, size = read_lazy(out / "montage_denoised.zarr")
    assert size == pytest.approx((0.03, 0.03)) and got.shape == img.shape
    want = denoise(img, str(trained_model), tile=128, overlap=32)
    assert np.abs(got.compute() - want).max() <= 0.01 * np.ptp(want)
