"""Issue 16's hostile reproducers (a fast subset): each must end in one clear message or a correct result, and nothing
the user had may be lost. Each test names the row of the re-run table it keeps from coming back."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from napari_emdenoise.checkpoints import CheckpointError, load_checkpoint
from napari_emdenoise.cli import main
from napari_emdenoise.io import DiskFullError, ImageFileError, atomic_write, read_tiff, write_tiff
from napari_emdenoise.simulate import simulate


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.tif"
    write_tiff(path, simulate(size=96, period=12, seed=0).noisy, pixel_size=0.02)
    return path


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and all(w in err for w in words), err
    return err


def test_mask_never_writes_over_its_input_or_twice_to_one_file(tmp_path, scan, capsys):  # rows 25, E28-E30
    before = scan.read_bytes()
    assert main(["mask", str(scan), "-o", str(scan), "--overwrite"]) == 2
    _one_line_error(capsys, "would replace the input")
    assert scan.read_bytes() == before
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "img.tif").write_bytes(before)
    assert main(["mask", str(tmp_path / "a" / "img.tif"), str(tmp_path / "b" / "img.tif"), "-o", str(tmp_path / "m"),
                 "--overwrite"]) == 2
    _one_line_error(capsys, "would both be written as img_mask.tif")


def test_an_unwritable_output_folder_is_found_before_any_compute(tmp_path, scan, capsys, monkeypatch):  # row 27
    import napari_emdenoise.batch as batch

    monkeypatch.setattr(batch, "denoise_file", lambda *a, **k: pytest.fail("an image was denoised before the check"))
    (tmp_path / "ro").write_text("a file where a folder should be made")
    assert main(["denoise", str(scan), "-o", str(tmp_path / "ro" / "out")]) == 2
    _one_line_error(capsys, "cannot write to")


def test_a_fifo_or_a_link_loop_is_refused_without_hanging(tmp_path):  # rows E25, E26
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.tif"
    loop.symlink_to(loop)
    proc = subprocess.run([sys.executable, "-m", "napari_emdenoise.cli", "denoise", str(fifo), str(loop), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr and "link to itself" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("bad", [["--checkpoint-every", "0"], ["--checkpoint-every", "-5"]])
def test_training_options_are_checked_before_a_folder_is_made(tmp_path, capsys, bad):  # rows 4, E35
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "1", "--size", "64"]) == 0
    capsys.readouterr()
    assert main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(tmp_path / "run"),
                 "--mode", "paired", "--model", "small", "--iters", "2", *bad]) == 2
    _one_line_error(capsys, "checkpoint interval")
    assert not (tmp_path / "run").exists()


def test_nan_pixels_in_a_training_image_are_named_before_training(tmp_path, capsys):  # row 32
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--n", "2", "--size", "64"]) == 0
    clean = read_tiff(sim / "clean" / "sim_0001.tif").data.copy()
    clean[:10, :10] = np.nan
    write_tiff(sim / "clean" / "sim_0001.tif", clean, overwrite=True)
    capsys.readouterr()
    assert main(["train", "--noisy", str(sim / "noisy"), "--clean", str(sim / "clean"), "-o", str(tmp_path / "run"),
                 "--mode", "paired", "--model", "small", "--iters", "2", "--no-report"]) == 2
    _one_line_error(capsys, "sim_0001.tif", "100 NaN")


def test_damaged_or_foreign_model_files_get_one_message(tmp_path, trained_model):  # rows 17, 22, E18, E19
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    sd = load_file(trained_model)
    with safe_open(str(trained_model), framework="pt") as f:
        meta = f.metadata()
    renamed = tmp_path / "renamed.safetensors"  # a reference .pth under our extension
    torch.save({"layer.weight": torch.zeros(2)}, renamed)
    with pytest.raises(CheckpointError, match="not a generator"):
        load_checkpoint(renamed)
    for key, value, words in (("config", json.dumps({**json.loads(meta["config"]), "netG": "unet_9000"}), "cannot build"),
                              ("normalization", json.dumps({"low": 99, "high": 1, "clip": 3}), "percentiles 99 and 1"),
                              ("normalization", json.dumps({"low": -5, "high": 150, "clip": 3}), "percentiles -5 and 150")):
        path = tmp_path / f"{key}.safetensors"
        save_file(sd, path, metadata={**meta, key: value})
        with pytest.raises(CheckpointError, match=words):
            load_checkpoint(path)


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--n", "1", "--size", "100000"], "size must be 8 to 16384"),
    (["simulate", "--n", "1", "--pixel-size", "0"], "pixel size must be a positive"),
    (["simulate", "--n", "1", "--angle", "nan"], "angle must be a finite"),
    (["simulate", "--n", "1", "--column-width", "0"], "column_width must be a positive"),
])
def test_impossible_simulator_settings_are_refused(tmp_path, capsys, argv, words):  # rows 36-38, E32-E34
    assert main([*argv, "-o", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, words)


@pytest.mark.parametrize("zoom", ["A=0x0", "A=5000x5000", "A=0px"])
def test_impossible_zooms_are_refused(tmp_path, capsys, zoom):  # rows 39, 40, E36
    mask = tmp_path / "m.tif"
    write_tiff(mask, np.full((32, 32), 255.0, np.float32))
    assert main(["synth", "--simulate", "--masks", str(mask), "--zoom", zoom, "--per-mask", "1", "-o",
                 str(tmp_path / "set")]) == 2
    _one_line_error(capsys, "zoom A")


def test_a_smaller_simulated_set_replaces_a_larger_one_whole(tmp_path):  # rows 45, E37
    out = tmp_path / "s"
    assert main(["simulate", "-o", str(out), "--n", "4", "--size", "32"]) == 0
    (out / "noisy" / ".sim_0003.tif.x.part").write_bytes(b"half")  # a write killed half-way
    assert main(["simulate", "-o", str(out), "--n", "2", "--size", "32", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "noisy").iterdir()) == ["sim_0000.tif", "sim_0001.tif"]


def test_an_info_batch_with_all_nan_images_describes_every_file(tmp_path, scan, capsys):  # rows 23, E23
    write_tiff(tmp_path / "nan.tif", np.full((16, 16), np.nan, np.float32))
    assert main(["info", str(tmp_path / "nan.tif"), str(scan)]) == 0
    out = capsys.readouterr().out
    assert "no finite pixels" in out and "scan.tif" in out


def test_an_impossible_stored_pixel_size_is_unknown_with_a_note(tmp_path):  # rows 20, 21, E31
    path = tmp_path / "psx0.ome.tif"
    tifffile.imwrite(path, np.ones((32, 32), np.float32), ome=True,
                     metadata={"PhysicalSizeX": 0.0, "PhysicalSizeY": 0.0, "axes": "YX"})
    img = read_tiff(path)
    assert img.pixel_size is None and any("impossible pixel size" in n for n in img.notes)
    with pytest.raises(ValueError, match="pixel size must be a positive"):
        write_tiff(tmp_path / "x.tif", img.data, pixel_size=float("nan"))


def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path):  # rows 46, 47
    def too_large(tmp):
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(DiskFullError, match="allows no file this large") as info:
        atomic_write(tmp_path / "x.bin", too_large)
    assert "disk full" not in str(info.value) and not list(tmp_path.iterdir())


def test_batch_size_zero_in_python_says_so(trained_model):  # row E42
    from napari_emdenoise import denoise

    with pytest.raises(ValueError, match="batch_size is the number of tiles"):
        denoise(simulate(size=64, period=12).noisy, trained_model, batch_size=0)


def test_ctrl_c_during_denoise_ends_cleanly(tmp_path):  # row E27: was a C++ abort (exit 134) at exit
    path = tmp_path / "big.tif"
    write_tiff(path, simulate(size=2048, period=12, seed=1).noisy)  # about 9 s of denoising on 2 cores: 3.5 s is inside it
    proc = subprocess.Popen([sys.executable, "-m", "napari_emdenoise.cli", "denoise", str(path), "-o", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3.5)  # start-up, then inside the first forward passes
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130) and "terminate called" not in err and "Traceback" not in err, err


def test_ctrl_c_while_the_command_loads_ends_with_one_line():
    """The console script's first moments: a Ctrl-C while the commands import, before any handler of theirs (in a
    process of its own, which an import interrupted half-way cannot leave in a strange state for other tests)."""
    script = """if True:
        import importlib.abc, sys

        class Interrupting(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "napari_emdenoise.cli":
                    raise KeyboardInterrupt

        sys.meta_path.insert(0, Interrupting())
        from napari_emdenoise._entry import main
        sys.exit(main())
    """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr == "emdenoise: interrupted\n", proc.stderr


def test_a_header_that_claims_terabytes_is_called_corrupt(tmp_path):  # row E7
    import struct

    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.ones((128, 128), np.float32))
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["ImageWidth"]
        offset, fmt = tag.valueoffset, {3: "<H", 4: "<I"}[tag.dtype]
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, 65535 if fmt == "<H" else 4294967280)
    path.write_bytes(bytes(raw))
    from napari_emdenoise.io import read_tiff_header

    for read in (read_tiff, read_tiff_header):
        with pytest.raises(ImageFileError, match="truncated or corrupt"):
            read(path)


def test_mask_and_check_remove_what_a_killed_run_left_half_written(tmp_path, scan):  # row 45
    out = tmp_path / "m"
    out.mkdir()
    (out / ".scan_mask.tif.x1.part").write_bytes(b"half")
    assert main(["mask", str(scan), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scan_mask.tif"]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_memory_budget_respects_a_container_or_job_limit(tmp_path, version):
    """psutil sees the whole machine; a SLURM job or a container may have far less: a whole-image pass sized by the
    machine would get the process killed."""
    from napari_emdenoise.devices import available_memory

    gib = 2**30
    if version == "v2":
        job = tmp_path / "system.slice" / "job_42" / "step_0"
        job.mkdir(parents=True)
        (tmp_path / "system.slice" / "job_42" / "memory.max").write_text(f"{8 * gib}\n")
        (tmp_path / "system.slice" / "job_42" / "memory.current").write_text(f"{5 * gib}\n")
        (job / "memory.max").write_text("max\n")
        (job / "memory.current").write_text(f"{5 * gib}\n")
        proc = "0::/system.slice/job_42/step_0\n"
    else:
        (tmp_path / "memory" / "docker" / "abc").mkdir(parents=True)
        (tmp_path / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{4 * gib}\n")
        (tmp_path / "memory" / "docker" / "abc" / "memory.usage_in_bytes").write_text(f"{1 * gib}\n")
        proc = "9:cpuset:/docker/abc\n4:memory:/docker/abc\n"
    (tmp_path / "self_cgroup").write_text(proc)
    room = available_memory(str(tmp_path), str(tmp_path / "self_cgroup"))
    assert room == 3 * gib
    assert available_memory(str(tmp_path), str(tmp_path / "absent")) > 0  # no cgroup file: the machine's figure


def test_an_address_space_limit_bounds_the_budget():
    import subprocess
    import sys

    code = ("import resource, psutil; from napari_emdenoise.devices import available_memory; "
            "vms = psutil.Process().memory_info().vms; resource.setrlimit(resource.RLIMIT_AS, (vms + 2**30, vms + 2**30)); "
            "print(available_memory() / 2**30)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 0.9 < float(out) <= 1.0


def test_the_core_s_warnings_reach_their_thread_s_receiver_whatever_other_threads_do():
    """warnings.catch_warnings is process-wide: another thread inside one (here ignoring everything) swallowed a job's
    NaN and inverted-contrast notes in the Denoise widget. A thread's own receiver gets them all the same."""
    import threading
    import warnings

    from napari_emdenoise import denoise
    from napari_emdenoise.inference import DenoiseWarning
    from napari_emdenoise.jobs import thread_warnings

    img = simulate(size=64, period=12, dose=6, seed=1).noisy
    img[3, 4] = np.nan
    inside, leave = threading.Event(), threading.Event()

    def other_worker():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=other_worker)
    t.start()
    try:
        assert inside.wait(30)
        got = []
        with thread_warnings(got.append):
            denoise(img, rescale=False)
        assert [str(m.message) for m in got if m.category is DenoiseWarning] == [
            "1 NaN/Inf pixel(s) were replaced by the median for denoising and are NaN in the output"]
        with thread_warnings(None):  # dropped: a flow that says the same once itself
            denoise(img, rescale=False)
    finally:
        leave.set()
        t.join()
    with pytest.warns(DenoiseWarning, match="1 NaN/Inf pixel"):  # without a receiver: the warnings module, as before
        denoise(img, rescale=False)
