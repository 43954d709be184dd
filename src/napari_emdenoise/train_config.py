"""Training settings and events: :class:`TrainConfig` (validated as it is made), the model
presets, :class:`TrainEvent` and :class:`TrainingError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .jobs import Event
from .lattice import check_clip, check_period_range
from .nets import GeneratorConfig

PRESETS = {
    # the bundled default model's architecture (residual, linear output, input clip 8, every image at its own scale):
    # what fine-tuning from the bundled model (init "bundled") trains
    "default": dict(generator=GeneratorConfig("resnet_6blocks", ngf=32, final="linear", residual=True), ndf=32, crop=128,
                    batch_size=4, clip=8.0, rescale=False, select=True),
    # CPU-friendly: 0.49 M-parameter generators (resnet_6blocks, ngf 16), 96-px crops, batch 4
    "small": dict(generator=GeneratorConfig("resnet_6blocks", ngf=16), ndf=32, crop=96, batch_size=4),
    # the reference CycleGAN's defaults, for a GPU
    "reference": dict(generator=GeneratorConfig("resnet_9blocks", ngf=64), ndf=64, crop=256, batch_size=1),
}


REFERENCE_LR = 2e-4  # the reference CycleGAN's
FINE_TUNE_LR = 5e-5  # a quarter of it, as fits fine-tuning (measured in benchmarks/training_fidelity.py)
FINE_TUNE_N2V_LR = 1e-5  # self-supervised fine-tuning: 5e-5 lost 0.6 dB in 100 iterations where 1e-5 kept the bundled PSNR


class TrainingError(ValueError):
    """Inputs or settings that cannot train; said before any training starts."""


@dataclass
class TrainConfig:
    mode: str = "cyclegan"  # "cyclegan", "paired" or "n2v" (self-supervised: noisy frames only)
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig("resnet_6blocks", ngf=16))
    ndf: int = 32
    n_layers_d: int = 3
    iterations: int = 2000
    decay_from: float = 0.5  # fraction of iterations after which the learning rate decays linearly to 0
    batch_size: int = 4
    crop: int = 96
    lr: float | None = None  # None: REFERENCE_LR from scratch, FINE_TUNE_LR (n2v: FINE_TUNE_N2V_LR) from the bundled model
    beta1: float = 0.5
    lambda_cycle: float = 10.0  # lambda_A = lambda_B
    lambda_identity: float = 0.5  # times lambda_cycle
    pool_size: int = 50
    lambda_adv_paired: float = 0.0  # paired mode: weight of the optional LSGAN term
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; for GPUs with bfloat16 units)
    norm_low: float = 0.5
    norm_high: float = 99.5
    period: float | None = None  # px per period the model works at; None: median of the noisy images
    # False: train on every image at its own scale (the data must span the periods to work at); the model records
    # the range of the noisy images' periods and inference resamples only images outside it
    rescale: bool = True
    period_range: tuple[float, float] | None = None  # with rescale False: the range to record (None: estimated)
    clip: float = 3.0  # normalised input clipped to [-clip, clip]; above ~5 leaves heavy dopants unclipped
    # "scratch": random weights (the reference); "bundled": G_A starts from the bundled default model (its architecture)
    init: str = "scratch"
    # weight of the data-consistency term (train_consistency): the output must explain each noisy crop within its noise
    # at the atom-column scale; 0 turns it off (the reference method)
    lambda_consistency: float = 0.0
    consistency_margin: float = 3.0  # |z| up to this many sigma costs nothing
    # mode "n2v": share of pixels that are blind spots per crop, and the px on each side along the fast (x) axis that are
    # masked with them (row-correlated scan noise would otherwise tell the network the blind spot's value)
    n2v_fraction: float = 0.005
    n2v_span: int = 2
    # score the starting model and every checkpoint on the noisy frames (train_select) and end with the best of them
    select: bool = False
    checkpoint_every: int = 500
    preview_every: int = 50
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        """The one place training settings are validated: a :class:`TrainingError` says what is wrong, before any work."""
        if self.mode not in ("cyclegan", "paired", "n2v"):
            raise TrainingError(f"mode must be 'cyclegan', 'paired' or 'n2v', not {self.mode!r}")
        if not (0 < self.n2v_fraction <= 0.2 and 0 <= self.n2v_span <= 16):
            raise TrainingError(f"the blind-spot share must be in (0, 0.2] and the fast-axis span 0-16 px, not "
                                f"{self.n2v_fraction} and {self.n2v_span}")
        if not isinstance(self.generator, GeneratorConfig):
            raise TrainingError(f"generator must be a GeneratorConfig, not {type(self.generator).__name__}")
        if self.precision not in ("fp32", "bf16"):
            raise TrainingError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")
        for name, value, low in (("iterations", self.iterations, 1), ("batch size", self.batch_size, 1),
                                 ("crop", self.crop, 16), ("generator width (ngf)", self.generator.ngf, 1),
                                 ("checkpoint interval", self.checkpoint_every, 1)):
            if not isinstance(value, int) or value < low:
                raise TrainingError(f"the {name} must be a whole number of at least {low}, not {value!r}")
        if self.init not in ("scratch", "bundled"):
            raise TrainingError(f"init must be 'scratch' or 'bundled', not {self.init!r}")
        if not (0 <= self.lambda_consistency < float("inf") and 0 <= self.consistency_margin < float("inf")):
            raise TrainingError(f"the consistency weight and margin must be finite numbers of at least 0 (0 turns the term "
                                f"off), not {self.lambda_consistency} and {self.consistency_margin}")
        if self.lr is None:
            self.lr = REFERENCE_LR if self.init != "bundled" else FINE_TUNE_N2V_LR if self.mode == "n2v" else FINE_TUNE_LR
        if not 0 < self.lr < 1:
            raise TrainingError(f"the learning rate must be a number between 0 and 1 (2e-4 is the reference's), not {self.lr}")
        if self.period is not None:
            if not (isinstance(self.period, (int, float)) and 1 <= self.period < float("inf")):
                raise TrainingError(f"the training period must be a number of px, at least 1, not {self.period!r}; "
                                    "leave it out to take the noisy images' median")
            self.period = float(self.period)
        try:
            self.clip = check_clip(self.clip)
            self.period_range = check_period_range(self.period_range)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise TrainingError(f"model preset must be one of {sorted(PRESETS)}, not {preset!r}")
        return cls(**{**PRESETS[preset], **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator"] = self.generator.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        pr = d.get("period_range")
        return cls(**{**d, "generator": GeneratorConfig(**d["generator"]), "period_range": tuple(pr) if pr else None})


@dataclass(kw_only=True)
class TrainEvent(Event):
    """One complete training iteration (``done`` of ``total``), with its losses."""

    stage: str = "train"
    losses: dict
    lr: float
    elapsed: float  # seconds in this session
    eta: float  # seconds left, from this session's speed
    preview: np.ndarray | None = None  # G_A on a fixed noisy crop, on the input's scale

    @property
    def iteration(self) -> int:
        return self.done
