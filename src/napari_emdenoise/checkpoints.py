"""Read and write generator checkpoints, safely.

Two formats:

* **reference** ``.pth`` — a plain ``state_dict`` as the reference CycleGAN code saves it
  (``latest_net_G_A.pth``, ``<epoch>_net_G_B.pth``). Loaded with
  ``torch.load(weights_only=True)``: a pickle that would run code is refused, never run.
  The architecture is inferred from the keys and shapes.
* **ours** ``.safetensors`` — no pickle at all; the header's metadata carries the
  architecture, the intensity normalisation used in training, the training
  pixels-per-period and a description (see :class:`ModelInfo`).

Every failure is one :class:`CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write
from .lattice import check_clip, check_period_range
from .nets import GeneratorConfig, build_generator

FORMAT = "napari-emdenoise"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint could not be read, or is not a generator this package can run."""


@dataclass
class ModelInfo:
    """What a generator needs besides its weights to be applied correctly."""

    config: GeneratorConfig = field(default_factory=GeneratorConfig)
    # intensity normalisation: the input's [low, high] percentiles map to [-1, 1]
    norm_low: float = 0.5
    norm_high: float = 99.5
    period: float | None = None  # training pixels per lattice period; None: unknown, no rescaling
    # normalised input is clipped to [-clip, clip] (hot pixels); 3 for the reference-era models
    clip: float = 3.0
    # periods (px) the model was trained on without resampling; None: only ``period``
    period_range: tuple[float, float] | None = None
    description: str = ""
    source: str = ""  # the file it came from
    format: str = "reference"  # "reference" or FORMAT

    def __post_init__(self) -> None:
        """The one place a model's metadata is validated (a ValueError says what is wrong)."""
        self.clip = check_clip(self.clip)
        self.period_range = check_period_range(self.period_range)
        if self.period is not None:
            if not (isinstance(self.period, (int, float)) and 0 < self.period < float("inf")):
                raise ValueError(f"training period {self.period!r} is not a positive number of px")
            self.period = float(self.period)

    def to_metadata(self) -> dict[str, str]:
        """safetensors header metadata (string values only)."""
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "normalization": json.dumps({"method": "percentile", "low": self.norm_low, "high": self.norm_high, "clip": self.clip}),
            "period": json.dumps(self.period),
            "period_range": json.dumps(list(self.period_range) if self.period_range else None),
            "description": self.description,
        }


# --------------------------------------------------------------------------- inference of the architecture
def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


def _drop_instance_norm_stats(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old checkpoints stored running stats for InstanceNorm (no affine weight): drop them."""
    stat_suffixes = (".running_mean", ".running_var", ".num_batches_tracked")
    out = {}
    for k, v in sd.items():
        if k.endswith(stat_suffixes):
            prefix = k.rsplit(".", 1)[0]
            if f"{prefix}.weight" not in sd:
                continue
        out[k] = v
    return out


def infer_config(sd: dict[str, torch.Tensor], path: str = "checkpoint") -> GeneratorConfig:
    """Generator configuration from reference state-dict keys and shapes."""
    name = Path(path).name
    w0 = sd.get("model.0.weight")
    if w0 is not None and w0.ndim == 4 and w0.shape[-1] == 4 and "model.1.weight" not in sd:
        raise CheckpointError(
            f"'{name}' holds a PatchGAN discriminator (net_D), not a generator. "
            "Pick the generator file, e.g. latest_net_G_A.pth (noisy to clean) or latest_net_G_B.pth."
        )
    if "model.1.weight" in sd and sd["model.1.weight"].ndim == 4 and sd["model.1.weight"].shape[-1] == 7:
        w = sd["model.1.weight"]
        ngf, input_nc = int(w.shape[0]), int(w.shape[1])
        blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
        if not blocks:
            raise CheckpointError(f"'{name}': a ResNet generator without residual blocks; the file is not a reference generator.")
        b0 = f"model.{blocks[0]}.conv_block."
        conv_idx = sorted({int(m.group(1)) for k in sd if k.startswith(b0) and (m := re.match(re.escape(b0) + r"(\d+)\.weight", k)) and sd[k].ndim == 4})
        padding = "zero" if conv_idx and conv_idx[0] == 0 else "reflect"
        dropout = len(conv_idx) == 2 and conv_idx[1] - conv_idx[0] == (5 if padding == "reflect" else 4)
        if "model.2.running_mean" in sd or "model.2.weight" in sd:
            norm = "batch"
        elif "model.1.bias" in sd:
            norm = "instance"
        else:
            norm = "none"
        out_keys = [k for k in sd if re.fullmatch(r"model\.\d+\.weight", k) and sd[k].ndim == 4 and sd[k].shape[-1] == 7]
        last = max(out_keys, key=lambda k: int(k.split(".")[1]))
        return GeneratorConfig(
            netG=f"resnet_{len(blocks)}blocks", input_nc=input_nc, output_nc=int(sd[last].shape[0]), ngf=ngf,
            norm=norm, use_dropout=dropout, padding_type=padding,
        )
    if "model.model.0.weight" in sd:
        w = sd["model.model.0.weight"]
        ngf, input_nc = int(w.shape[0]), int(w.shape[1])
        depth = max(k.count("model.") for k in sd if k.startswith("model.model."))
        num_downs = depth - 1
        if num_downs not in (7, 8):
            raise CheckpointError(f"'{name}': a U-Net with {num_downs} levels; only unet_128 (7) and unet_256 (8) are supported.")
        out_w = sd["model.model.3.weight"]  # outermost ConvTranspose2d: (in, out, 4, 4)
        has_norm_weight = any(re.search(r"\.model\.2\.weight$", k) for k in sd if k != "model.model.2.weight")
        has_bias = "model.model.1.model.1.bias" in sd
        norm = "batch" if has_norm_weight else ("instance" if has_bias else "none")
        return GeneratorConfig(
            netG=f"unet_{128 if num_downs == 7 else 256}", input_nc=input_nc, output_nc=int(out_w.shape[1]), ngf=ngf,
            norm=norm,  # U-Net dropout leaves no trace in the keys; it is off in eval mode anyway
        )
    raise CheckpointError(
        f"'{name}' is not a generator of the reference CycleGAN code (ResNet or U-Net); "
        f"its first keys are {list(sd)[:3]}. Pick a *_net_G_A.pth / *_net_G_B.pth file or a .safetensors model."
    )


def _build_and_load(sd: dict[str, torch.Tensor], cfg: GeneratorConfig, name: str) -> nn.Module:
    try:
        net = build_generator(cfg)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"'{name}': its metadata names an architecture this plugin cannot build ({exc}); "
                              "re-export the model, or load its weights as a reference .pth") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [k for k in expected if k in sd and tuple(expected[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            s for s in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape of {wrong[0]} is {tuple(sd[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}" if wrong else "",
            ) if s
        )
        raise CheckpointError(
            f"'{name}': the weights do not fit a {cfg.netG} generator (ngf {cfg.ngf}, norm {cfg.norm}): {detail}. "
            "The file holds weights for another architecture."
        )
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"'{name}': its weights hold NaN or Inf values (in {bad}): it was saved from a run that "
                              "diverged. Use an earlier checkpoint of that run, or train again (a lower learning rate).")
    net.load_state_dict(sd, strict=True)
    return net.eval()


# --------------------------------------------------------------------------- reading
def _read_reference(path: Path) -> dict[str, torch.Tensor]:
    try:
        with open(path, "rb") as fh:  # a file object: torch.load would hand a path named *.safetensors to safetensors
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"'{path.name}' was refused: it is a pickle that would run code or create objects other than "
            f"tensors ({str(exc).splitlines()[0][:200]}). Only plain weight files are loaded; nothing in it was executed."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"'{path.name}' could not be read as a PyTorch checkpoint: it is truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). Copy the file again."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path.name}' is a PyTorch file but not a state dict of weights (it holds {type(obj).__name__}).")
    return obj


def _read_ours(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"'{path.name}' could not be read as a safetensors model: it is truncated or corrupt ({exc}).") from exc
    return sd, meta


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) < 8:
        return "empty"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    n = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 2 <= n <= 100_000_000:
        return "safetensors"
    return "unknown"


def load_checkpoint(path: str | os.PathLike, config: GeneratorConfig | None = None) -> tuple[nn.Module, ModelInfo]:
    """A generator (eval mode, CPU) and its :class:`ModelInfo` from a reference .pth or our .safetensors."""
    path = Path(path)
    if path.is_dir():
        found = sorted(q.name for q in path.glob("*") if q.suffix in (".safetensors", ".pth"))[:3]
        raise CheckpointError(f"'{path}' is a folder, not a model file: give the checkpoint itself"
                              + (f" (it holds {', '.join(found)})" if found else " (.safetensors or a reference .pth)"))
    if not path.is_file():
        raise CheckpointError(f"'{path}': no such model file.")
    kind = _sniff(path)
    if kind == "empty":
        raise CheckpointError(f"'{path.name}' is empty or truncated: not a checkpoint.")
    if kind == "unknown":
        raise CheckpointError(
            f"'{path.name}' is not a checkpoint: expected a PyTorch .pth state dict or a .safetensors model."
        )
    meta: dict[str, str] = {}
    if kind == "torch":
        sd, description = _read_reference(path), f"reference CycleGAN generator from {path.name}"
    else:
        sd, meta = _read_ours(path)
        description = f"generator from {path.name}"
    if meta.get("format") != FORMAT:  # a plain state dict: clean it, infer the architecture
        sd = _drop_instance_norm_stats(_strip_prefixes(sd))
        if config is None:
            run = _run_generator(sd, path)
            if run is not None:
                return run
        cfg = config or infer_config(sd, str(path))
        return _build_and_load(sd, cfg, path.name), ModelInfo(config=cfg, source=str(path), description=description)
    info = _info_from_metadata(meta, path, config)
    return _build_and_load(sd, info.config, path.name), info


def _info_from_metadata(meta: dict[str, str], path: Path, config: GeneratorConfig | None = None) -> ModelInfo:
    """The :class:`ModelInfo` a .safetensors model of ours carries in its header."""
    try:
        cfg = GeneratorConfig(**json.loads(meta["config"]))
        norm = json.loads(meta.get("normalization", "{}"))
        period = json.loads(meta.get("period", "null"))
        info = ModelInfo(
            config=config or cfg, norm_low=float(norm.get("low", 0.5)), norm_high=float(norm.get("high", 99.5)),
            period=period, clip=norm.get("clip", 3.0), period_range=json.loads(meta.get("period_range", "null")) or None,
            description=meta.get("description", ""), source=str(path), format=FORMAT,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"'{path.name}': its metadata is damaged ({exc}); re-export the model.") from exc
    if not 0 <= info.norm_low < info.norm_high <= 100:
        raise CheckpointError(f"'{path.name}': its metadata is damaged (normalisation percentiles {info.norm_low:g} and "
                              f"{info.norm_high:g}; they must satisfy 0 <= low < high <= 100); re-export the model.")
    return info


RUN_MODEL = "denoiser.safetensors"  # a training run folder's model, whose header describes the run's generators


def _run_generator(sd: dict[str, torch.Tensor], path: Path) -> tuple[nn.Module, ModelInfo] | None:
    """A plain state dict that a training run of this plugin wrote (``latest_net_G_A.pth`` beside the run's
    ``denoiser.safetensors``): its architecture and intensity mapping come from that model's header, as the keys
    cannot tell a residual generator with a linear output from the reference one with tanh. None where the folder
    holds no such model or the weights do not fit it (a reference file copied there)."""
    from safetensors import SafetensorError, safe_open

    sibling = path.parent / RUN_MODEL
    if path.name == RUN_MODEL or not sibling.is_file():
        return None
    try:
        with safe_open(str(sibling), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            return None
        info = _info_from_metadata(meta, sibling)
        net = _build_and_load(sd, info.config, path.name)
    except (SafetensorError, OSError, ValueError, RuntimeError, CheckpointError):
        return None
    run = f"the training run in '{path.parent.name}'"
    return net, replace(info, source=str(path), format="reference",
                        description=f"{path.name} of {run} (architecture and intensity mapping from its {RUN_MODEL})")


class Denoiser(nn.Module):
    """A generator together with its :class:`ModelInfo` (normalisation, clip, training period or
    range, architecture, source): what :func:`load_generator` returns and what every denoising
    entry point accepts. Calling it runs the generator; ``.net`` is the bare generator (reference
    state-dict keys), ``.info`` its metadata."""

    def __init__(self, net: nn.Module, info: ModelInfo):
        super().__init__()
        if not isinstance(info, ModelInfo):
            raise TypeError(f"a Denoiser needs a ModelInfo, not {type(info).__name__}")
        self.net = net
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_generator(path: str | os.PathLike, config: GeneratorConfig | None = None) -> Denoiser:
    """A :class:`Denoiser` from a reference ``*_net_G_*.pth`` or our ``.safetensors``: eval mode, on CPU."""
    net, info = load_checkpoint(path, config)
    return Denoiser(net, info).eval()


def model_info(model: nn.Module) -> ModelInfo:
    """The ModelInfo of a :class:`Denoiser`; for a bare module (no metadata) the defaults: the
    reference normalisation, no training period (so no resampling), architecture unknown."""
    return model.info if isinstance(model, Denoiser) else ModelInfo(source="in-memory module")


def _bare(net: nn.Module) -> nn.Module:
    return net.net if isinstance(net, Denoiser) else net


# --------------------------------------------------------------------------- writing
def save_generator(path: str | os.PathLike, net: nn.Module, info: ModelInfo, half: bool = False) -> Path:
    """Write our .safetensors format (atomically: the old file survives a failed write).

    ``half`` stores the weights as float16: half the size, outputs within about 1e-4 of the
    output range (loading converts them back to float32).
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in _bare(net).state_dict().items()}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    return atomic_write(Path(path), lambda tmp: save_file(sd, tmp, metadata=info.to_metadata()))


def save_reference(path: str | os.PathLike, net: nn.Module) -> Path:
    """Write a plain CPU state dict as the reference code's ``save_networks`` does."""
    sd = {k: v.detach().cpu() for k, v in _bare(net).state_dict().items()}
    return atomic_write(Path(path), lambda tmp: torch.save(sd, tmp))
