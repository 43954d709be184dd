"""Generators and discriminator with the reference CycleGAN code's layers and state-dict keys.

The module structure (and therefore every key such as ``model.10.conv_block.5.weight``)
follows junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``, so a user's
``latest_net_G_A.pth`` loads with ``strict=True`` and computes the same function.

One addition, :class:`TileNorm`, replaces ``nn.InstanceNorm2d(affine=False)``. It has no
parameters or buffers (the state dict is unchanged) and by default computes exactly
what InstanceNorm computes. For tiled inference it can instead *record* statistics
jointly over a batch of tiles and then *apply* those fixed statistics to every tile, so
all tiles are normalised alike and no seam or intensity step appears (see ``tiling``).
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .lattice import mirror_index

NORMS = ("instance", "batch", "none")
GENERATORS = ("resnet_6blocks", "resnet_9blocks", "unet_128", "unet_256")
FINALS = ("tanh", "linear")


class TileNorm(nn.Module):
    """InstanceNorm2d(affine=False, track_running_stats=False) with switchable statistics.

    mode "instance": per sample and channel over H, W (the reference behaviour).
    mode "record":   statistics over the whole batch, restricted to ``weight_mask``
                     (1 where a pixel belongs to its tile's own region), stored in ``stats``.
    mode "fixed":    normalise with the stored ``stats``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.mode = "instance"
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.mask: torch.Tensor | None = None  # (N, 1, h, w) at input resolution, set by the caller

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "instance":
            if x.is_cuda and _few_large_planes(x) and not (torch.is_grad_enabled() and x.requires_grad):
                return instance_norm_chunked(x, self.eps)
            return nn.functional.instance_norm(x, eps=self.eps)
        xf = x.float()
        if self.mode == "record":
            m = self.mask
            if m is None:
                raise RuntimeError("TileNorm in record mode needs a mask")
            if m.shape[-2:] != x.shape[-2:]:
                m = nn.functional.interpolate(m, size=x.shape[-2:], mode="nearest")
            m = m.to(xf.dtype)
            n = m.sum()
            mean = (xf * m).sum(dim=(0, 2, 3)) / n
            var = (((xf - mean.view(1, -1, 1, 1)) ** 2) * m).sum(dim=(0, 2, 3)) / n
            self.stats = (mean.detach(), var.detach())
        if self.stats is None:
            raise RuntimeError("TileNorm in fixed mode before statistics were recorded")
        mean, var = self.stats
        y = (xf - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, mode={self.mode}"


BUSY_ROWS = 1024  # (sample, channel) rows that keep a GPU's statistics kernels busy
CHUNKS = 64  # at most this many chunks per row


def _few_large_planes(x: torch.Tensor) -> bool:
    """Whether torch's instance norm would leave most of a GPU idle: its statistics and normalisation kernels work one
    block per (sample, channel), so a whole 4096^2 image (32-128 channels) ran them on a few dozen of an H200's 132
    multiprocessors; they took 54 % of a whole-image pass (`benchmarks/profile_device.py`)."""
    return x.dim() == 4 and x.shape[0] * x.shape[1] < BUSY_ROWS and x.shape[2] * x.shape[3] >= 2**16


def instance_norm_chunked(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``instance_norm(x, eps)`` (no affine, no running statistics) for a few large planes, without gradients: each
    (sample, channel) plane is split into equal chunks whose mean and variance come from one batch-statistics kernel
    on a GPU (``torch.batch_norm_stats``, float32 Welford, one block per chunk; float32 ``var_mean`` elsewhere), then
    combined exactly (the chunks' variances plus the variance of their means), and applied in one kernel that computes
    in float32 and writes ``x``'s type."""
    n, c, h, w = x.shape
    px = h * w
    k = math.gcd(px, CHUNKS)  # equal chunks: a divisor of the plane's pixel count
    flat = x.reshape(1, n * c * k, px // k)
    if x.is_cuda:
        mean, invstd = torch.batch_norm_stats(flat, eps)
        var = invstd.float().pow(-2) - eps
    else:
        var, mean = torch.var_mean(flat.float(), dim=(0, 2), correction=0)
    mean, var = mean.float().view(n, c, k), var.view(n, c, k)
    m = mean.mean(dim=2, keepdim=True)
    v = var.mean(dim=2, keepdim=True) + (mean - m).square().mean(dim=2, keepdim=True)
    scale = torch.rsqrt(v.clamp_min(0) + eps)
    return torch.addcmul((-m * scale)[..., None], x, scale[..., None], out=torch.empty_like(x))


def get_norm_layer(norm: str = "instance"):
    """The reference's norm choice: batch (affine, running stats), instance (no affine), none."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return TileNorm
    if norm == "none":
        return lambda num_features: nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, padding_type: str, norm_layer, use_dropout: bool, use_bias: bool):
        super().__init__()
        self.conv_block = self.build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

    @staticmethod
    def _pad(padding_type: str) -> tuple[list[nn.Module], int]:
        if padding_type == "reflect":
            return [nn.ReflectionPad2d(1)], 0
        if padding_type == "replicate":
            return [nn.ReplicationPad2d(1)], 0
        if padding_type == "zero":
            return [], 1
        raise ValueError(f"padding {padding_type!r} is not implemented")

    def build_conv_block(self, dim, padding_type, norm_layer, use_dropout, use_bias) -> nn.Sequential:
        pad, p = self._pad(padding_type)
        block = pad + [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            block += [nn.Dropout(0.5)]
        pad, p = self._pad(padding_type)
        block += pad + [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
        return nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _final(final: str) -> nn.Module:
    """The generator's last activation: the reference Tanh, or none ("linear")."""
    if final not in ("tanh", "linear"):
        raise ValueError(f"the final activation must be 'tanh' or 'linear', not {final!r}")
    return nn.Tanh() if final == "tanh" else nn.Identity()


class ResnetGenerator(nn.Module):
    """Two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings (reference layout)."""

    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=TileNorm, use_dropout=False, n_blocks=6, padding_type="reflect",
                 use_bias=True, final="tanh", residual=False):
        super().__init__()
        self.residual = residual  # the network predicts a correction added to its input
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 4
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * mult, padding_type, norm_layer, use_dropout, use_bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), _final(final)]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y + x if self.residual else y


class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=TileNorm, use_dropout=False, use_bias=True):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` halvings (7 for unet_128, 8 for unet_256); input side a multiple of 2**num_downs."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=TileNorm, use_dropout=False, use_bias=True,
                 final="tanh", residual=False):
        super().__init__()
        self.residual = residual
        kw = dict(norm_layer=norm_layer, use_bias=use_bias)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **kw)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, **kw)
        self.num_downs = num_downs
        self.model.model[-1] = _final(final)  # the outermost block ends in the reference's Tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y + x if self.residual else y


class NLayerDiscriminator(nn.Module):
    """The reference PatchGAN discriminator (70x70 receptive field for n_layers=3)."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=TileNorm, use_bias=True):
        super().__init__()
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            prev, nf_mult = nf_mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, nf_mult = nf_mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a reference generator (the reference's option names)."""

    netG: str = "resnet_6blocks"
    input_nc: int = 1
    output_nc: int = 1
    ngf: int = 64
    norm: str = "instance"
    use_dropout: bool = False
    padding_type: str = "reflect"
    n_blocks: int | None = None  # resnet: overrides the count in netG (e.g. resnet_3blocks)
    # additions (no parameters, so the state-dict keys stay the reference's):
    final: str = "tanh"  # "tanh" (reference: output bounded to [-1, 1]) or "linear" (room for dopants above the range)
    residual: bool = False  # the output is the input plus what the network computes (input and output channels equal)

    def __post_init__(self) -> None:
        if self.final not in FINALS:
            raise ValueError(f"final activation must be one of {FINALS}, not {self.final!r}")
        if self.residual and self.input_nc != self.output_nc:
            raise ValueError("a residual generator needs as many input as output channels")

    def to_dict(self) -> dict:
        return asdict(self)


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A generator from its configuration (no weights initialised beyond torch defaults)."""
    norm_layer = get_norm_layer(cfg.norm)
    # the reference gives convolutions a bias exactly when the norm is InstanceNorm
    use_bias = cfg.norm == "instance"
    if cfg.netG.startswith("resnet_"):
        n_blocks = cfg.n_blocks or int(cfg.netG.removeprefix("resnet_").removesuffix("blocks"))
        return ResnetGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, norm_layer, cfg.use_dropout, n_blocks, cfg.padding_type,
                               use_bias, final=cfg.final, residual=cfg.residual)
    if cfg.netG in ("unet_128", "unet_256"):
        return UnetGenerator(cfg.input_nc, cfg.output_nc, 7 if cfg.netG == "unet_128" else 8, cfg.ngf, norm_layer,
                             cfg.use_dropout, use_bias, final=cfg.final, residual=cfg.residual)
    if cfg.netG.startswith("unet_"):
        raise ValueError(f"unknown U-Net {cfg.netG!r}; use unet_128 or unet_256")
    raise ValueError(f"unknown generator {cfg.netG!r}; use one of {GENERATORS}")


def build_discriminator(input_nc: int = 1, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> NLayerDiscriminator:
    return NLayerDiscriminator(input_nc, ndf, n_layers, get_norm_layer(norm), use_bias=norm == "instance")


def init_weights(net: nn.Module, gain: float = 0.02, seed: int | None = None) -> nn.Module:
    """The reference's 'normal' init: conv weights N(0, gain), biases 0, norm weights N(1, gain)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in net.modules():
        name = m.__class__.__name__
        if hasattr(m, "weight") and m.weight is not None and ("Conv" in name or "Linear" in name):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * gain)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        elif "BatchNorm2d" in name:
            with torch.no_grad():
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=gen) * gain)
                m.bias.zero_()
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- whole-image statistics in tiled inference
def size_multiple(net: nn.Module) -> int:
    """Input sides must be a multiple of this for the output to match the input's size."""
    unet = next((m for m in net.modules() if isinstance(m, UnetGenerator)), None)  # also inside a Denoiser
    return 2**unet.num_downs if unet is not None else 4


EDGE = 8  # px of mirrored image put before the top and left edges of every image (see :func:`pad_for_network`)


def padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The 2-D shape :func:`pad_for_network` gives an image of ``shape``."""
    return -(-(shape[0] + EDGE) // multiple) * multiple, -(-(shape[1] + EDGE) // multiple) * multiple


def pad_for_network(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror (N, C, H, W) by :data:`EDGE` px above and left of the image and below and right of it up to multiples of
    ``multiple``; the image sits at ``[EDGE:EDGE + H, EDGE:EDGE + W]`` of the result.

    Why the lead: a 3x3 stride-2 convolution with 1 px of zero padding (the ResNet generators' downsampling) reaches
    one pixel past the top and left edges of an even-sized input and never past the bottom and right ones. The first
    rows and columns of an image are the only ones next to that zero padding, and the bundled model brightened them:
    at 8 px per period on 1024² simulated lattices, 46 of 57 flagged regions of the consistency map lay in the first
    6 columns, none in the last 6. With 8 px of mirrored image in front, 4 regions were flagged in all. The mirror
    repeats the edge pixel (numpy's 'symmetric'), which on those images beat torch's 'reflect' (10 regions)."""
    h, w = x.shape[-2:]
    ph, pw = padded_shape((h, w), multiple)
    if (ph, pw) == (h, w):
        return x
    rows = mirror_index(h, EDGE, ph - h - EDGE, x.device)
    cols = mirror_index(w, EDGE, pw - w - EDGE, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def tile_norms(net: nn.Module) -> list[TileNorm]:
    return [m for m in net.modules() if isinstance(m, TileNorm)]


def set_norm_mode(net: nn.Module, mode: str) -> None:
    for m in tile_norms(net):
        m.mode = mode
        if mode == "instance":
            m.stats = None
            m.mask = None


@torch.no_grad()
def record_statistics(net: nn.Module, batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run ``batch`` once with every InstanceNorm taking statistics over all tiles' cores jointly.

    Afterwards every :class:`TileNorm` applies those fixed statistics, so each tile is
    normalised as the whole image would be. Returns the batch's output, which was computed
    with exactly those statistics and so is final.
    """
    norms = tile_norms(net)
    for m in norms:
        m.mode, m.mask = "record", mask
    try:
        return net(batch)
    finally:
        for m in norms:
            m.mode, m.mask = "fixed", None


CONTEXT_TOLERANCE = 0.003  # share of an output pixel's input gradient allowed to lie beyond its context


def context_px(net: nn.Module, tolerance: float = CONTEXT_TOLERANCE) -> int:
    """The network's effective context: the smallest radius (px, Chebyshev) around an output pixel that holds all but
    ``tolerance`` of that pixel's input gradient, with the normalisation fixed at a random image's statistics.

    A tile edge closer than this changes the pixel's value (the convolutions there see padding, not the image), so
    tiles keep at least this much context around the pixels they contribute. Measured once per set of weights (about
    0.3 s on 2 CPU cores for an ngf-32 generator) and kept on the module until its parameters change.
    """
    params = list(net.parameters())
    key = (tuple(p._version for p in params), tuple(p.data_ptr() for p in params[:1]), tolerance)
    cached = getattr(net, "_emdenoise_context", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    device = params[0].device if params else torch.device("cpu")
    in_c = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    multiple = size_multiple(net)
    side = -(-192 // multiple) * multiple
    was_training = net.training
    net.eval()
    try:
        while True:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(1, in_c, side, side, generator=gen).to(device)  # a normalised image is about N(0, 1)
            if tile_norms(net):
                record_statistics(net, x, torch.ones_like(x[:, :1]))
            x.requires_grad_(True)
            c = side // 2
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(net(x)[0, :, c, c].float().sum(), x)
            mass = grad.detach().abs().sum(dim=(0, 1)).double().cpu()
            dist = torch.maximum((torch.arange(side) - c).abs()[:, None], (torch.arange(side) - c).abs()[None, :])
            rings = torch.zeros(side, dtype=torch.float64).index_add_(0, dist.flatten(), mass.flatten())
            beyond = rings.flip(0).cumsum(0).flip(0) - rings  # gradient mass farther than each radius
            total = float(rings.sum())
            radius = int(torch.nonzero(beyond <= tolerance * total)[0]) if total > 0 else 0
            if radius < c - 8 or side >= 1024:  # not cut off by the test image's own edge
                break
            side *= 2
    finally:
        set_norm_mode(net, "instance")
        net.train(was_training)
    net._emdenoise_context = (key, radius)
    return radius


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its torch.compile'd form, or the error


def compiled(net: nn.Module):
    """``torch.compile(net)``, made once per module and kept while the module lives (the compilation itself happens at
    the first call with each input shape); None where compiling it failed here before (see :func:`compile_failed`)."""
    fn = _COMPILED.get(net)
    if fn is None:
        fn = _COMPILED[net] = torch.compile(net)
    return None if isinstance(fn, BaseException) else fn


def compile_failed(net: nn.Module, error: BaseException) -> None:
    """Remember that ``net`` cannot be compiled here: it runs as it is from now on."""
    _COMPILED[net] = error
