import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_emdenoise import load_generator
from napari_emdenoise.checkpoints import (
    CheckpointError,
    ModelInfo,
    load_checkpoint,
    save_generator,
    save_reference,
)
from napari_emdenoise.nets import (
    GeneratorConfig,
    build_discriminator,
    build_generator,
    init_weights,
)

SHARED = Path(os.environ.get("EMDENOISE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference"


@pytest.mark.skipif(not (REFERENCE / "resnet_6blocks_ngf32_nc1.json").exists(), reason="../shared/reference is absent")
def test_reference_checkpoint_reproduces_the_reference_output():
    net = load_generator(REFERENCE / "resnet_6blocks_ngf32_nc1_latest_net_G_A.pth")
    cfg = net.info.config
    assert (cfg.netG, cfg.ngf, cfg.norm, cfg.input_nc, cfg.output_nc) == ("resnet_6blocks", 32, "instance", 1, 1)
    assert not net.training
    x = torch.from_numpy(np.load(REFERENCE / "resnet_6blocks_ngf32_nc1_input.npy"))
    expected = np.load(REFERENCE / "resnet_6blocks_ngf32_nc1_output.npy")
    with torch.no_grad():
        out = net(x).numpy()
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-4


def _random(cfg: GeneratorConfig, seed=0):
    net = init_weights(build_generator(cfg), seed=seed)
    with torch.no_grad():  # random norm affine/bias terms so that every parameter matters
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return net.eval()


CONFIGS = [
    GeneratorConfig("resnet_6blocks", 1, 1, 8, "instance"),
    GeneratorConfig("resnet_9blocks", 1, 1, 4, "instance"),
    GeneratorConfig("resnet_6blocks", 3, 3, 8, "batch"),
    GeneratorConfig("resnet_6blocks", 1, 1, 8, "none"),
    GeneratorConfig("resnet_6blocks", 1, 1, 8, "instance", use_dropout=True),
    GeneratorConfig("resnet_6blocks", 1, 1, 8, "instance", padding_type="zero"),
    GeneratorConfig("unet_128", 1, 1, 4, "instance"),
    GeneratorConfig("unet_256", 3, 1, 4, "batch"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.netG}-{c.norm}-nc{c.input_nc}-drop{int(c.use_dropout)}-{c.padding_type}")
def test_reference_layout_roundtrip_infers_the_architecture(tmp_path, cfg):
    net = _random(cfg)
    path = save_reference(tmp_path / "latest_net_G_A.pth", net)
    loaded = load_generator(path)
    assert loaded.info.config == cfg
    size = 256 if cfg.netG == "unet_256" else 128
    x = torch.rand(1, cfg.input_nc, size, size) * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)


def test_resnet_keys_are_the_reference_names():
    keys = list(build_generator(GeneratorConfig("resnet_6blocks", ngf=32)).state_dict())
    assert keys[:4] == ["model.1.weight", "model.1.bias", "model.4.weight", "model.4.bias"]
    assert "model.10.conv_block.5.weight" in keys and keys[-2:] == ["model.23.weight", "model.23.bias"]
    d = list(build_discriminator(1, 64, 3, "instance").state_dict())
    assert d == [f"model.{i}.{p}" for i in (0, 2, 5, 8, 11) for p in ("weight", "bias")]


def test_module_prefix_and_old_instance_norm_stats_are_tolerated(tmp_path):
    net = _random(CONFIGS[0])
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd["module.model.2.running_mean"] = torch.zeros(8)  # InstanceNorm stats saved by old PyTorch
    sd["module.model.2.running_var"] = torch.ones(8)
    torch.save(sd, tmp_path / "old_net_G_A.pth")
    loaded = load_generator(tmp_path / "old_net_G_A.pth")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)


def test_safetensors_roundtrip_keeps_metadata_and_holds_no_pickle(tmp_path):
    net = _random(CONFIGS[0])
    info = ModelInfo(config=CONFIGS[0], norm_low=1.0, norm_high=99.0, period=12.5, description="test model")
    path = save_generator(tmp_path / "m.safetensors", net, info)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and b"test model" in raw[8 : 8 + n]
    assert b"\x80\x02" not in raw[:2] and not raw.startswith(b"PK")
    loaded, got = load_checkpoint(path)
    assert (got.period, got.norm_low, got.norm_high, got.description, got.config) == (12.5, 1.0, 99.0, "test model", CONFIGS[0])
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)



def test_half_precision_saving_halves_the_file_and_keeps_the_outputs(tmp_path):
    net = _random(CONFIGS[0])
    info = ModelInfo(config=CONFIGS[0], period=12.5, description="test model")
    full = save_generator(tmp_path / "full.safetensors", net, info)
    half = save_generator(tmp_path / "half.safetensors", net, info, half=True)
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    loaded, got = load_checkpoint(half)
    assert got.period == 12.5 and all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=2e-3)

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G_A.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model.1.weight": _Evil(marker)}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(path)
    assert not marker.exists()
    # the same inside torch's zip format
    torch_path = tmp_path / "zip_net_G_A.pth"
    torch.save({"x": torch.zeros(1), "payload": _Evil(marker)}, torch_path)
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(torch_path)
    assert not marker.exists()


def test_bad_checkpoints_each_give_one_clear_error(tmp_path):
    good = save_reference(tmp_path / "good_net_G_A.pth", _random(CONFIGS[0]))
    cases = {}
    p = tmp_path / "notes.pth"
    p.write_text("these are my notes, not weights\n")
    cases[p] = "not a checkpoint"
    p = tmp_path / "truncated_net_G_A.pth"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases[p] = "truncated or corrupt"
    p = tmp_path / "empty.pth"
    p.write_bytes(b"")
    cases[p] = "empty"
    p = tmp_path / "latest_net_D_A.pth"
    torch.save(build_discriminator(1, 16).state_dict(), p)
    cases[p] = "discriminator"
    p = tmp_path / "classifier.pth"
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3), "fc.weight": torch.zeros(10, 8)}, p)
    cases[p] = "not a generator"
    p = tmp_path / "optimizer.pth"
    torch.save({"step": 3, "lr": [0.1]}, p)
    cases[p] = "not a state dict"
    sm = save_generator(tmp_path / "small.safetensors", _random(CONFIGS[0]), ModelInfo(config=CONFIGS[0]))
    p = tmp_path / "truncated.safetensors"
    p.write_bytes(sm.read_bytes()[:-100])
    cases[p] = "truncated or corrupt"
    for path, words in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_generator(path)
        assert words in str(info.value) and path.name in str(info.value), (path.name, str(info.value))


def test_weights_for_another_architecture_are_named(tmp_path):
    net = _random(CONFIGS[0])  # ngf 8
    path = save_generator(tmp_path / "lying.safetensors", net, ModelInfo(config=GeneratorConfig("resnet_6blocks", ngf=16)))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_generator(path)
    ref = save_reference(tmp_path / "r_net_G_A.pth", net)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_generator(ref, config=GeneratorConfig("resnet_9blocks", ngf=8))


def test_missing_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        load_generator(tmp_path / "nope.pth")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "denoiser.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"'.*run' is a folder, not a model file: .*\(it holds denoiser.safetensors\)"):
        load_generator(tmp_path / "run")  # a run folder given for its model (was 'no such model file')


def test_an_unknown_device_name_says_which_are_known():
    from napari_emdenoise import denoise

    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda'.*not 'gpu'"):  # was torch's RuntimeError
        denoise(np.ones((16, 16), np.float32), device="gpu")


def test_linear_output_residual_clip_and_period_range_round_trip(tmp_path):
    import torch

    from napari_emdenoise.checkpoints import ModelInfo, load_checkpoint, save_generator
    from napari_emdenoise.nets import GeneratorConfig, build_generator

    cfg = GeneratorConfig("resnet_6blocks", ngf=4, final="linear", residual=True)
    net = build_generator(cfg)
    path = save_generator(tmp_path / "m.safetensors", net, ModelInfo(config=cfg, period=9.0, clip=8.0, period_range=(5.0, 17.0)))
    back, info = load_checkpoint(path)
    assert (info.clip, info.period_range, info.config.final, info.config.residual) == (8.0, (5.0, 17.0), "linear", True)
    x = torch.randn(1, 1, 32, 32) * 3
    with torch.no_grad():
        assert torch.equal(back(x), net.eval()(x))
        back.model[-2].weight.zero_()  # the last convolution: a residual network then returns its input
        back.model[-2].bias.zero_()
        assert torch.equal(back(x), x) and back(x).abs().max() > 1  # nothing bounds a linear output to [-1, 1]
    with pytest.raises(ValueError, match="final activation"):
        GeneratorConfig(final="sigmoid")


def test_a_damaged_period_range_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from napari_emdenoise.checkpoints import (
        CheckpointError,
        ModelInfo,
        load_checkpoint,
        save_generator,
    )
    from napari_emdenoise.nets import GeneratorConfig, build_generator

    cfg = GeneratorConfig("resnet_6blocks", ngf=4)
    path = save_generator(tmp_path / "m.safetensors", build_generator(cfg), ModelInfo(config=cfg, period=9.0, period_range=(5.0, 17.0)))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(load_file(path), tmp_path / "bad.safetensors", metadata={**meta, "period_range": "[17, 5]"})
    with pytest.raises(CheckpointError, match="metadata is damaged"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_load_generator_returns_a_denoiser_that_keeps_its_metadata(tmp_path):
    from napari_emdenoise import Denoiser
    from napari_emdenoise.checkpoints import load_checkpoint, model_info, save_generator
    from napari_emdenoise.inference import DEFAULT_MODEL

    d = load_generator(DEFAULT_MODEL)
    assert isinstance(d, Denoiser) and model_info(d) is d.info and d.info.period_range
    moved = d.to("cpu").eval()  # module methods keep the metadata: it is part of the object, not a patched attribute
    assert moved.info is d.info
    save_generator(tmp_path / "copy.safetensors", d, d.info)  # written with the bare generator's reference keys
    bare, info = load_checkpoint(tmp_path / "copy.safetensors")
    assert list(bare.state_dict()) == list(d.net.state_dict()) and info.period_range == d.info.period_range
    with pytest.raises(TypeError, match="ModelInfo"):
        Denoiser(d.net, {"period": 3.0})
