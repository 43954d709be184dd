"""The one way to denoise: normalise -> rescale -> tiles -> batches -> device -> blend -> back.

:func:`iter_denoise` is a job (:mod:`.jobs`): a generator of :class:`Progress` events that
returns the result; the napari widget runs it in a worker (Cancel closes it at the next batch)
and :func:`denoise` drives it for scripts and the CLI.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch
from torch import nn

from . import nets, tiling
from .jobs import Event, Stopped, drive, warn
from .checkpoints import ModelInfo, load_generator, model_info
from .devices import Downloader, Uploader, available_devices, available_memory, devices, pick_device  # noqa: F401 - the public names live here too
from . import lattice
from .lattice import PeriodEstimate, estimate_period, resample

DEFAULT_MODEL = Path(__file__).parent / "models" / "default.safetensors"
CLIP = 3.0  # default: normalised input is clipped to [-CLIP, CLIP]: hot pixels cannot dominate a tile (models record their own)
RESCALE_TOLERANCE = 0.03  # relative scale mismatch below which the image is not resampled
# a model trained over a period range also works a little beyond it (the range is the 5th-95th percentile of its data),
# and resampling by a factor near 1 costs more than it gains (cubic interpolation of columns 1-2 px wide): images
# within this factor outside the range are left as they are
RANGE_MARGIN = 1.25
INVERTED_SKEW = -0.5  # an image more left-skewed than this looks like bright-field / ABF contrast


class DenoiseWarning(UserWarning):
    """Something the user should know about a denoising run (shown in napari, printed by the CLI)."""


class Cancelled(Exception):
    """The run was cancelled; no result exists."""


@dataclass
class Progress(Event):
    """``done`` of ``total`` tiles (over all planes of a stack)."""

    stage: str = "denoise"


@dataclass
class Plan:
    """What a run will do, for the user to see before pressing the button."""

    period: float | None  # estimated or given image period (px)
    scale: float  # resampling factor applied to the image (1: none)
    note: str
    notify: bool = False  # the user should be told (resampled, or could not be)


# --------------------------------------------------------------------------- pieces
def resolve_model(model: str | os.PathLike | nn.Module | None) -> nn.Module:
    """A :class:`Denoiser` from a path or None (the bundled default model); a module as it is (a bare
    generator has no metadata: the reference normalisation and no resampling)."""
    if isinstance(model, nn.Module):
        return model
    if model is None:
        if not DEFAULT_MODEL.exists():
            raise FileNotFoundError(
                "this installation has no bundled default model yet; pass a checkpoint "
                "(a reference *_net_G_A.pth or a .safetensors model): model= in Python, --model on the command line"
            )
        model = DEFAULT_MODEL
    return load_generator(model)


def normalize(image: np.ndarray, low: float, high: float, clip: float = CLIP) -> tuple[np.ndarray, float, float]:
    """Map the [low, high] percentiles of the finite pixels to [-1, 1] (clipped at +-clip)."""
    finite = image[np.isfinite(image)]
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    lo, hi = _usable_range(lo, hi, lambda: (float(finite.min()), float(finite.max())))
    return normalize_with(image, lo, hi, clip), lo, hi


def _usable_range(lo: float, hi: float, extremes: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """``lo``, ``hi`` (percentiles), or the extremes where they coincide; a constant image gets any scale that is not
    zero at its magnitude."""
    if not hi > lo:
        lo, hi = extremes()
    if not hi > lo:
        hi = lo + max(1.0, abs(lo) * 1e-3)
    return lo, hi


def normalize_with(image, lo: float, hi: float, clip: float = CLIP):
    """Map ``lo`` and ``hi`` to -1 and 1 (clipped at +-clip): the intensity mapping taken from elsewhere (a sample).
    A numpy array gives float32 numpy; a torch tensor a float32 tensor on its device."""
    x = image.float() if isinstance(image, torch.Tensor) else image.astype(np.float32)
    x = (x - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    if isinstance(x, torch.Tensor):
        return x.clamp_(-clip, clip)
    np.clip(x, -clip, clip, out=x)
    return x


def denormalize(x, lo: float, hi: float):
    """The inverse of :func:`normalize_with`, in place (numpy array or torch tensor)."""
    x *= np.float32((hi - lo) / 2.0)
    x += np.float32((hi + lo) / 2.0)
    return x


def check_period(period, shape: tuple[int, ...] | None = None) -> float | None:
    """A given lattice period (px) as a float, or a ValueError that says what is wrong with it: at least 1 px and, when
    the image's ``shape`` is known, at most half its side."""
    if period is None:
        return None
    if isinstance(period, (bool, np.bool_)):
        raise ValueError(f"the period must be a number of pixels, not {period!r}")
    try:
        p = float(period)
    except (TypeError, ValueError):
        raise ValueError(f"the period must be a number of pixels, not {period!r}") from None
    top = min(shape[-2:]) / 2 if shape is not None else np.inf
    if not (np.isfinite(p) and 1.0 <= p <= top):
        within = f"between 1 px and half the image side ({top:g} px)" if shape is not None else "a finite number of px, at least 1"
        raise ValueError(f"the period must be {within}, not {period!r}; leave it out to have it estimated")
    return p


def plan_rescale(image, info: ModelInfo, period: float | None = None, rescale: bool = True) -> Plan:
    """Decide the resampling factor that brings the image (numpy array, or a tensor on its device) to the model's
    training period or into its trained range."""
    return plan_for(estimate_period(image) if rescale and period is None else period, info, rescale)


def plan_for(period: float | PeriodEstimate | None, info: ModelInfo, rescale: bool = True) -> Plan:
    """:func:`plan_rescale` for a period given or estimated already."""
    if not rescale:
        return Plan(period, 1.0, "scale normalisation off")
    if isinstance(period, PeriodEstimate):
        if not period.found:
            return Plan(None, 1.0, "no clear lattice found in the image: not rescaled", notify=True)
        period = period.period
    if info.period is None:
        return Plan(period, 1.0, f"image period {period:.2f} px; the model does not record its training period: not rescaled",
                    notify=True)
    if info.period_range is not None:
        lo, hi = info.period_range
        if lo / RANGE_MARGIN <= period <= hi * RANGE_MARGIN:
            where = "lies in" if lo <= period <= hi else "is close enough to"
            return Plan(period, 1.0, f"image period {period:.2f} px {where} the model's trained range {lo:.1f}-{hi:.1f} px")
        edge = lo if period < lo else hi
        return Plan(period, edge / period,
                    f"image period {period:.2f} px lies outside the model's trained range {lo:.1f}-{hi:.1f} px: "
                    f"resampled x{edge / period:.3f} to {edge:.1f} px", notify=True)
    scale = info.period / period
    if abs(scale - 1.0) < RESCALE_TOLERANCE:
        return Plan(period, 1.0, f"image period {period:.2f} px matches the model's {info.period:.2f} px")
    return Plan(period, scale, f"image period {period:.2f} px resampled x{scale:.3f} to the model's {info.period:.2f} px",
                notify=True)


def _full_res_channels(net: nn.Module) -> int:
    """Channels of the first convolution: the widest activation kept at full resolution."""
    return next(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))


def _auto_batch(net: nn.Module, tile_px: int, device: torch.device, n_tiles: int) -> int:
    """Tiles per batch: what memory allows, but at least ~8 batches so progress and Cancel stay responsive."""
    per_tile = tile_px * _full_res_channels(net) * 4 * 4  # bytes: ~4 live full-resolution activations
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * 0.4
    else:
        budget = 256 * 2**20
    return int(max(1, min(64, budget // per_tile, -(-n_tiles // 8))))


BYTES_PER_CHANNEL_PX = 4 * 4  # float32, ~4 full-resolution activations alive at once during a pass
MEMORY_SHARE = {"cpu": 0.4, "cuda": 0.5}  # of the available (CPU) or free (CUDA) memory one pass may fill


def _memory_per_px(net: nn.Module, device: torch.device) -> float:
    """Bytes of free memory a pixel of one pass asks for: its activations over the share a pass may fill."""
    return _full_res_channels(net) * BYTES_PER_CHANNEL_PX / MEMORY_SHARE.get(device.type, MEMORY_SHARE["cpu"])


def _memory_budget(net: nn.Module, device: torch.device) -> int:
    """Pixels (of an image, or of tiles together) whose activations one pass may hold: a share of the memory
    available now (not a constant, so a larger machine keeps larger images exact; within a container's or job's
    limit, :func:`.devices.available_memory`)."""
    return int(_free_memory(device) // _memory_per_px(net, device))


def _free_memory(device: torch.device) -> int:
    """Bytes of memory free on ``device`` now (on the CPU: what this process may still fill)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


KEEP_SHARE = 0.1  # a stack stays on the device from planning to its pass where it fills at most this share of the free memory
SATURATED = 1e-3  # share of pixels at an integer type's ceiling beyond which the detector is said to saturate


def _whole_pass_budget(net: nn.Module, device: torch.device) -> int:
    """Pixels of the largest image a network with InstanceNorm denoises in one whole-image pass rather than in tiles.

    One pass is the only exact way to normalise every layer with the whole image's statistics, and it is cheaper
    than a joint batch of all tiles (no overlaps, no masks: 4.9 s against 9.5 s for 1536^2 px on 2 CPU cores);
    tiles then only bound memory, for images beyond this."""
    return _memory_budget(net, device)


def _calibration_budget(net: nn.Module, device: torch.device) -> int:
    """Pixels of tiles used jointly to take whole-image statistics (one batch, outputs kept) when the image is too
    large for one pass; a spread subset of the tiles beyond that (a warning says so)."""
    return _memory_budget(net, device)


def _in_channels(net: nn.Module) -> int:
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- the tiled pass
def _pass_with_progress(net: nn.Module, run: Callable[[], torch.Tensor], done: float, span: int, total: int, stage: str,
                        what: str, layers: bool = True) -> Generator[Progress, None, torch.Tensor]:
    """One forward pass (``run()``) of ``span`` tiles after ``done``: a :class:`Progress` every
    :data:`PROGRESS_EVERY_S` while it runs, so a long pass moves the bar and can be cancelled; returns its output.
    ``layers=False`` (a compiled network, which layer hooks would break): the events say it runs, and a cancel
    takes effect when the pass ends."""
    steps = _layer_progress(net, run, layers=layers)
    try:
        while True:
            try:
                frac = next(steps)
            except StopIteration as finished:
                return finished.value
            yield Progress(done + span * frac, total, stage,
                           f"{what}: {100 * frac:.0f} % of the network" if layers else f"{what}: compiled network running")
    finally:  # cancelled: the pass ends (at its next layer) before the caller resets the network
        steps.close()


class _Stop(Exception):
    """Raised inside a forward pass (by a layer hook) to end it at the next layer."""


class _Network:
    """How a run calls its network: as it is, or ``torch.compile``'d (``compile=True``: about twice the speed on a CPU
    once compiled, for the seconds each new input shape takes to compile). Where compiling fails, the network runs as
    it is and the run says so once."""

    def __init__(self, net: nn.Module, compile: bool):
        self.net, self.fn = net, nets.compiled(net) if compile else None
        self.failure: BaseException | None = None

    @property
    def layers(self) -> bool:
        """Whether layer hooks can follow a pass (not through a compiled network)."""
        return self.fn is None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is not None:
            try:
                return self.fn(x)
            except Exception as exc:  # noqa: BLE001 - any failure to compile: the network as it is
                if _is_oom(exc):
                    raise
                nets.compile_failed(self.net, exc)
                self.fn, self.failure = None, exc
        return self.net(x)

    def warn(self) -> None:
        if self.failure is not None:
            first = str(self.failure).strip().splitlines()[0][:200] if str(self.failure).strip() else ""
            warn(f"torch.compile could not compile the network here ({type(self.failure).__name__}: {first}): it "
                 "runs as it is", DenoiseWarning, stacklevel=4)
            self.failure = None


PROGRESS_EVERY_S = 0.25  # the longest a single pass goes without a progress event


class _Workers:
    """Daemon threads that run forward passes, each kept for the next pass once its pass is over. torch keeps cuDNN's
    execution plans per thread, so a new thread per pass planned every convolution again: 15 of the 25 ms that a
    1024² plane's pass took on an H200, and every pass autotuned again with ``cudnn.benchmark`` on."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list = []  # the inboxes of threads that wait for a pass
        os.register_at_fork(after_in_child=self.idle.clear)  # a forked child has none of these threads

    def start(self, job: Callable[[], None]):
        """Run ``job`` in an idle thread (a new one where none is); returns the thread's inbox for :meth:`release`."""
        with self.lock:
            inbox = self.idle.pop() if self.idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="emdenoise-forward", daemon=True).start()
        inbox.put(job)
        return inbox

    def release(self, inbox) -> None:
        """The job given to this inbox's thread has finished: the thread takes the next."""
        with self.lock:
            self.idle.append(inbox)

    @staticmethod
    def _serve(inbox) -> None:
        while True:
            job = inbox.get()
            try:
                job()
            except BaseException:  # noqa: BLE001 - a job hands its own errors over; the thread serves on regardless
                pass


_WORKERS = _Workers()


def _layer_progress(net: nn.Module, run: Callable[[], torch.Tensor], every_s: float | None = None, layers: bool = True):
    """Run ``run()`` (one forward pass of ``net``) in a thread; yield the fraction of ``net``'s convolutions done every
    ``every_s`` seconds while it runs (0 without ``layers``); return its result. Closing the generator stops the pass
    at its next layer (without ``layers``: waits for its end)."""
    every_s = PROGRESS_EVERY_S if every_s is None else every_s
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))] if layers else []
    state = {"done": 0, "stop": False, "thread": None}

    def before(module, args):
        if state["stop"] and threading.get_ident() == state["thread"]:
            raise _Stop

    def after(module, args, output):
        if threading.get_ident() == state["thread"]:  # a pass of the same network in another thread is not ours
            state["done"] += 1

    result: dict = {}
    finished = threading.Event()  # not Thread.join: a Ctrl-C inside join can mark a running thread stopped (Python < 3.13)

    def target():
        state["thread"] = threading.get_ident()
        try:
            result["value"] = run()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc
        finally:
            finished.set()

    hooks = []
    try:
        for m in convs:
            hooks += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
    except TypeError:  # a module rebuilt without torch's hook dicts (e.g. sent to a dask worker): no layer progress
        for h in hooks:
            h.remove()
        hooks, convs = [], []
    inbox = None
    try:
        inbox = _WORKERS.start(target)
        while not finished.wait(every_s):
            yield min(0.99, state["done"] / max(1, len(convs)))
    finally:  # also when closed at a yield (Cancel) or on Ctrl-C: the pass stops at its next layer, then the hooks go
        if not finished.is_set():
            state["stop"] = True
            if not convs and threading.current_thread() is threading.main_thread():
                # a compiled network (no layer hooks) cannot stop midway; said at once, as a script or the CLI would
                # otherwise wait in silence (warnings may be recorded until the run ends)
                print("stopping once the compiled network's pass ends (compiling and a pass can take tens of seconds; "
                      "a second Ctrl-C quits at once)", file=sys.stderr, flush=True)
            finished.wait()
        for h in hooks:
            h.remove()
        if inbox is not None and finished.is_set():  # not after a second Ctrl-C, which leaves the pass running
            _WORKERS.release(inbox)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _percentiles(t: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile`` (linear) of every pixel of ``t``, computed where ``t`` lives: order statistics on a GPU
    (no copy back of the plane), numpy on the CPU (its selection is faster there than torch's)."""
    if t.device.type == "cpu":
        return [float(v) for v in np.percentile(t.numpy(), qs)]
    return _order_percentiles(t, qs)


def _order_percentiles(t: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile``'s linear interpolation between order statistics, with torch on any device: one sort, which on
    a GPU takes milliseconds for a 4096^2 plane (``kthvalue`` works one block per slice there, 20x slower than a sort:
    pytorch/pytorch#75599), and one copy back of the values needed."""
    flat = t.reshape(-1)
    n = flat.numel()
    pos = [q / 100.0 * (n - 1) for q in qs]
    ks = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, n - 1) for p in pos})
    values = flat.sort().values[torch.tensor(ks, device=flat.device)].double().cpu().numpy()
    at = dict(zip(ks, values))
    out = []
    for p in pos:
        k = int(np.floor(p))
        a, b = float(at[k]), float(at[min(k + 1, n - 1)])
        out.append(a + (b - a) * (p - k) if p > k else a)
    return out


def _intensity_range(t: torch.Tensor, info: ModelInfo) -> tuple[float, float]:
    """The [norm_low, norm_high] percentiles of a plane (all finite by now), as :func:`normalize` takes them."""
    lo, hi = _percentiles(t, (info.norm_low, info.norm_high))
    return _usable_range(lo, hi, lambda: (float(t.min()), float(t.max())))


def _fits_whole(net: nn.Module, shape: tuple[int, int], tiles: list[tiling.Tile], device: torch.device) -> bool:
    """Whether a (resampled) plane goes through in one pass: one tile anyway, or a generator with InstanceNorm and an
    image whose pass fits the memory budget (the only exact whole-image statistics; see :func:`_whole_pass_budget`)."""
    if len(tiles) == 1:
        return True
    h, w = nets.padded_shape(shape, nets.size_multiple(net))
    return bool(nets.tile_norms(net)) and h * w <= _whole_pass_budget(net, device)


def _whole_pass(net: nn.Module, x: torch.Tensor, device: torch.device, amp: bool, done: float, span: int, total: int,
                network: _Network | None = None) -> Generator[Progress, None, torch.Tensor | None]:
    """One forward pass of a whole normalised plane already on the device (padded for the network, cropped back);
    progress per layer every :data:`PROGRESS_EVERY_S`. Returns the output on the device, or None where the device ran
    out of memory (the caller goes to tiles)."""
    h, w = x.shape
    batch = nets.pad_for_network(x[None, None], nets.size_multiple(net))
    if _in_channels(net) != 1:  # an RGB model sees the grey image in every channel
        batch = batch.repeat(1, _in_channels(net), 1, 1)
    autocast = torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")

    network = network or _Network(net, False)

    def whole():
        with torch.no_grad(), autocast:
            return network(batch)

    nets.set_norm_mode(net, "instance")
    try:
        y = yield from _pass_with_progress(net, whole, done, span, total, "denoise", "whole image", network.layers)
        network.warn()
    except RuntimeError as exc:
        if not _is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        warn(f"the whole {h}x{w} image did not fit in {device.type} memory at once: denoised in tiles",
             DenoiseWarning, stacklevel=3)
        return None
    e = nets.EDGE
    return y.float().mean(dim=1)[0, e : e + h, e : e + w]  # a 3-channel output is averaged to grey


def _tiled_pass(
    net: nn.Module, x: torch.Tensor, tiles: list[tiling.Tile], batch_size: int, device: torch.device,
    amp: bool, progress_offset: int, progress_total: int, stats: list | None = None, network: _Network | None = None,
) -> Generator[Progress, None, torch.Tensor]:
    """Denoise one normalised 2D plane on the device with the tiles :func:`_plan` made for its shape; yields
    progress (in tiles) per batch; returns the blend, on the device: tiles are cut from the plane there and blended
    there, each tile's weights the outer product of its two axis weights (each made once). ``stats`` (from
    :func:`shared_state`): the network's normalisation statistics to use instead of taking them from this plane."""
    h, w = x.shape
    # pad as a whole-image pass would, so that every tile sits on the network's sampling grid
    x = nets.pad_for_network(x.to(device)[None, None], nets.size_multiple(net))[0, 0]
    in_c = _in_channels(net)
    th = tiles[0].rows.stop - tiles[0].rows.start
    tw = tiles[0].cols.stop - tiles[0].cols.start
    autocast = torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")
    weights: dict[int, torch.Tensor] = {}
    network = network or _Network(net, False)

    def axis_weight(a: tiling.AxisTile) -> torch.Tensor:
        if id(a) not in weights:
            weights[id(a)] = torch.from_numpy(np.asarray(a.weight, dtype=np.float64)).to(device)
        return weights[id(a)]

    def to_batch(group: list[tiling.Tile]) -> torch.Tensor:
        t = torch.stack([x[t.slices] for t in group])[:, None]
        if in_c != 1:  # an RGB model sees the grey image in every channel
            t = t.repeat(1, in_c, 1, 1)
        return t

    def blend(group: list[tiling.Tile], y: torch.Tensor) -> None:
        y = y.float().mean(dim=1)  # a 3-channel output is averaged to grey
        for t, yt in zip(group, y):
            out[t.slices] += yt * torch.outer(axis_weight(t.rows), axis_weight(t.cols)).float()

    out = torch.zeros(x.shape, dtype=torch.float32, device=device)
    nets.set_norm_mode(net, "instance")  # whatever an earlier run left, start from the reference behaviour
    try:
        todo = tiles
        if stats is not None:  # taken once for a whole image of which this array is a part
            for m, st in zip(nets.tile_norms(net), stats):
                m.mode, m.stats = "fixed", tuple(v.to(device) for v in st)
        elif len(tiles) > 1 and nets.tile_norms(net):
            # whole-image statistics from one joint batch; its outputs are final, so they count as done
            cal = tiling.calibration_tiles(tiles, _calibration_budget(net, device))
            if len(cal) < len(tiles):
                share = sum(t.core_mask().sum() for t in cal) / (h * w)
                need = x.numel() * _memory_per_px(net, device) / 2**30
                warn(
                    f"the {h}x{w} image is too large for whole-image normalisation in the {device.type} memory available: "
                    f"its statistics come from {len(cal)} of its {len(tiles)} tiles ({100 * share:.0f} % of the image), so "
                    "the result can differ from a whole-image pass in places (a few % of the range); with about "
                    f"{need:.{0 if need >= 10 else 1}f} GiB of {'free GPU' if device.type == 'cuda' else 'available'} memory it is denoised exactly",
                    DenoiseWarning, stacklevel=2)
            mask = torch.from_numpy(np.stack([t.core_mask() for t in cal])[:, None]).to(device)
            batch = to_batch(cal)

            def joint():
                with autocast:
                    return nets.record_statistics(net, batch, mask)

            # one long forward pass: its progress (layers done) every quarter second, so the bar moves and Cancel works
            y = yield from _pass_with_progress(net, joint, progress_offset, len(cal), progress_total, "statistics",
                                               "whole-image statistics")
            blend(cal, y)
            del mask, batch, y
            done_ids = {id(t) for t in cal}
            todo = [t for t in tiles if id(t) not in done_ids]
            yield Progress(progress_offset + len(cal), progress_total, "statistics")
        i, bs = 0, batch_size
        while i < len(todo):
            group = todo[i : i + bs]

            def forward(group=group):
                with torch.no_grad(), autocast:
                    return network(to_batch(group))

            try:
                y = yield from _pass_with_progress(net, forward, progress_offset + len(tiles) - len(todo) + i, len(group),
                                                   progress_total, "denoise", "tiles", network.layers)
                network.warn()
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                if bs == 1:
                    raise MemoryError(f"one {th}x{tw} tile does not fit in {device.type} memory; choose a smaller tile size") from exc
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                bs = max(1, bs // 2)
                warn(f"out of {device.type} memory: batch size lowered to {bs}", DenoiseWarning, stacklevel=2)
                continue
            blend(group, y)
            i += len(group)
            yield Progress(progress_offset + len(tiles) - len(todo) + i, progress_total)
        return out[nets.EDGE : nets.EDGE + h, nets.EDGE : nets.EDGE + w]
    finally:  # also on cancel: the module is left as the reference code would use it
        nets.set_norm_mode(net, "instance")


def _scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The 2-D shape an image of ``shape`` is resampled to by ``scale`` (at least 8 px a side)."""
    return max(8, round(shape[-2] * scale)), max(8, round(shape[-1] * scale))


def _plan(shape: tuple[int, int], tile: int | None, overlap: int, net: nn.Module) -> list[tiling.Tile]:
    """Tiles for an image of ``shape`` after :func:`.nets.pad_for_network`, with the network's own context at tile edges
    (measured only where the image takes more than one tile)."""
    padded = nets.padded_shape(shape, nets.size_multiple(net))
    split = tile is not None and max(padded) > tile
    return tiling.plan_tiles(padded, tile, overlap, align=nets.size_multiple(net),
                             context=nets.context_px(net) if split else tiling.MIN_CONTEXT)


# --------------------------------------------------------------------------- parts of an image denoised apart
@dataclass
class Shared:
    """What the parts of one image share when they are denoised apart (the chunks of a lazy array): the intensity
    mapping, the resampling plan and the network's normalisation statistics, all taken once from a sample."""

    lo: float
    hi: float
    fill: float  # NaN/Inf pixels are denoised as this value (the sample's median) and come back NaN
    plan: Plan
    stats: list | None  # per TileNorm (mean, var) on the CPU; None for a network without InstanceNorm


def shared_state(sample: np.ndarray, net: nn.Module, *, tile: int | None = 512, overlap: int = 64, device: str = "auto",
                 period: float | None = None, rescale: bool = True, amp: bool = True) -> Shared:
    """Take from ``sample`` (a 2-D part of the image, e.g. a central crop) what every part then shares (:class:`Shared`).

    The statistics come from the sample's tiles jointly, exactly as the in-memory path takes them over a whole image.
    """
    sample = _check_image(sample)
    if sample.ndim != 2:
        raise ValueError(f"the sample must be one 2-D plane, got shape {sample.shape}")
    info = model_info(net)
    dev = pick_device(device)
    net = net.to(dev).eval()
    finite = np.isfinite(sample) if sample.dtype.kind == "f" else np.ones(sample.shape, bool)
    if not finite.any():
        raise ValueError("the image sample has no finite pixels (all NaN or Inf)")
    fill = float(np.median(sample[finite])) if not finite.all() else 0.0
    plane = np.where(finite, sample, fill) if not finite.all() else sample
    plan = plan_rescale(plane, info, check_period(period, plane.shape), rescale)
    x, lo, hi = normalize(plane, info.norm_low, info.norm_high, info.clip)
    norms = nets.tile_norms(net)
    if not norms:
        return Shared(lo, hi, fill, plan, None)
    if plan.scale != 1.0:
        x = resample(x, _scaled_shape(x.shape, plan.scale))
    shape = x.shape
    x = nets.pad_for_network(torch.from_numpy(np.ascontiguousarray(x))[None, None], nets.size_multiple(net))[0, 0].numpy()
    tiles = _plan(shape, tile, overlap, net)
    if _fits_whole(net, shape, tiles, dev):  # the whole sample in one pass: its exact statistics
        cal = tiling.plan_tiles(x.shape, None, 0)
    else:
        cal = tiling.calibration_tiles(tiles, _calibration_budget(net, dev))
    batch = torch.from_numpy(np.stack([x[t.slices] for t in cal])[:, None]).to(dev)
    if _in_channels(net) != 1:
        batch = batch.repeat(1, _in_channels(net), 1, 1)
    mask = torch.from_numpy(np.stack([t.core_mask() for t in cal])[:, None]).to(dev) if len(cal) > 1 else torch.ones_like(batch[:, :1])
    autocast = torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp and dev.type == "cuda")
    try:
        with autocast:
            nets.record_statistics(net, batch, mask)
        stats = [tuple(v.detach().float().cpu() for v in m.stats) for m in norms]
    finally:
        nets.set_norm_mode(net, "instance")
    return Shared(lo, hi, fill, plan, stats)


def denoise_part(part, net: nn.Module, shared: Shared, *, tile: int | None = 512, overlap: int = 64,
                 batch_size: int | None = None, device: str = "auto", amp: bool = True) -> np.ndarray:
    """Denoise a part of an image (2-D, or a stack of parts) with what :func:`shared_state` took from the whole: the same
    intensity mapping, resampling factor and statistics, so parts put side by side match the whole image's result
    away from their borders. Returns float32 of the part's shape."""
    arr = _check_image(part)
    info = model_info(net)
    dev = pick_device(device)
    net = net.to(dev).eval()
    planes = arr.reshape(-1, *arr.shape[-2:])
    out = np.empty(planes.shape, np.float32)
    for k, plane in enumerate(planes):
        bad = ~np.isfinite(plane) if plane.dtype.kind == "f" else None
        if bad is not None and bad.any():
            plane = np.where(bad, shared.fill, plane)
        else:
            bad = None
        x = normalize_with(plane, shared.lo, shared.hi, info.clip)
        if shared.plan.scale != 1.0:
            x = resample(x, _scaled_shape(x.shape, shared.plan.scale))
        tiles = _plan(x.shape, tile, overlap, net)
        first = tiles[0]
        bs = batch_size or _auto_batch(net, (first.rows.stop - first.rows.start) * (first.cols.stop - first.cols.start), dev,
                                       len(tiles))
        y = drive(_tiled_pass(net, torch.from_numpy(x), tiles, bs, dev, amp, 0, len(tiles), stats=shared.stats)).cpu().numpy()
        if y.shape != plane.shape:
            y = resample(y, plane.shape)
        y = denormalize(y, shared.lo, shared.hi)
        if bad is not None:
            y[bad] = np.nan
        out[k] = y
    return out.reshape(arr.shape)


# --------------------------------------------------------------------------- public entry points
def contrast_skew(plane) -> float:
    """Skewness of a lightly smoothed subsample, hot pixels clipped: ADF images of columns, particles or amorphous
    films are strongly right-skewed (measured +1.8 to +2.9 on the fidelity scenes and the simulator at 1-100
    counts/px), their inverted (bright-field-like) versions as strongly left-skewed. A tensor is measured on its
    device. Measured on a central crop of at most 512² at full resolution: a strided subsample of a lattice whose
    period divides the stride sees one place in the unit cell (a 2048² image at 8 px came out at -0.67)."""
    sub = tiling.central_crop(plane, 512)
    x = lattice._float64(sub) if isinstance(sub, torch.Tensor) else torch.from_numpy(np.asarray(sub, dtype=np.float64))
    x, _, bad = _fill_nonfinite(x)
    if bad == x.numel():
        return 0.0
    lo, hi = _percentiles(x, (0.1, 99.9))
    x = lattice.gaussian_blur(x.clamp(lo, hi)[None], (1.0, 1.0))[0]
    sd = float(x.std(correction=0))
    return float(((x - x.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def _check_image(image) -> np.ndarray:
    try:
        arr = np.asarray(image)
    except ValueError:  # e.g. a list of planes of different shapes
        shapes = sorted({tuple(np.shape(p)) for p in image}) if isinstance(image, (list, tuple)) else "?"
        raise ValueError(f"the planes of a stack must all have one shape, got {shapes}: denoise them one by one") from None
    check_image_type(arr.dtype, arr.shape)
    return arr


PERIOD_MISMATCH = 1.5  # a period given this far (either way) from a clear estimate gets a note


def period_note(given: float, estimate: PeriodEstimate) -> str | None:
    """What to tell the user where the period they gave is far from the one the image shows; None where it is not."""
    if not estimate.found or 1 / PERIOD_MISMATCH <= given / estimate.period <= PERIOD_MISMATCH:
        return None
    return (f"the period given, {given:g} px, is {given / estimate.period:.2g} times the one the image shows "
            f"({estimate.period:.2f} px, estimated): the image is resampled by the period given, and a wrong one blurs "
            "or invents columns; check it (CLI: --period; the Denoise widget: 'period'), or leave it out to use the "
            "estimate")


def contrast_note(seen, invert: bool) -> str | None:
    """What to tell the user where the image, as the model will see it (``seen``: turned over already where ``invert``),
    does not look like ADF contrast; None where it does."""
    skew = contrast_skew(seen)
    if skew >= INVERTED_SKEW:
        return None
    if invert:
        return (f"invert is on, but the image has bright columns on a dark background (ADF/HAADF contrast; skewness "
                f"{-skew:+.1f}): turned over, the model would see dark columns and its result is wrong; denoise it "
                "without invert (CLI: leave out --invert; the Denoise widget: untick 'invert contrast')")
    return (f"the image looks like inverted contrast (bright-field or ABF: atom columns darker than the background; "
            f"skewness {skew:.1f}); ADF-trained models such as the bundled one expect bright columns: denoise it with "
            "invert=True (CLI: --invert; the Denoise widget: 'invert contrast')")


def check_image_type(dtype, shape: tuple[int, ...]) -> None:
    """A ValueError or TypeError that says what is wrong with an image of this type and shape for denoising."""
    dtype = np.dtype(dtype)
    if dtype == object or dtype.kind not in "uif":
        raise TypeError(f"image must be a numeric array (8/16/32-bit integers or floats), got dtype {dtype}")
    if len(shape) < 2 or 0 in shape:
        raise ValueError(f"image must be a non-empty 2D image or a stack of them, got shape {shape}")
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) >= 8:
        raise ValueError(f"the image has shape {shape}, which looks like RGB(A) colour: denoising needs one channel "
                         "(for a grey image saved as colour, pass image[..., 0] or image.mean(axis=-1))")
    if min(shape[-2:]) < 8:
        raise ValueError(f"image is too small to denoise: {shape[-2:]} px (at least 8x8)")


def iter_denoise(
    image,
    model: str | os.PathLike | nn.Module | None = None,
    *,
    tile: int | None = 512,
    overlap: int = 64,
    batch_size: int | None = None,
    device: str = "auto",
    period: float | None = None,
    rescale: bool = True,
    amp: bool = True,
    invert: bool = False,
    compile: bool = False,
) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`denoise`: yields :class:`Progress` per batch, returns the result.

    Closing the generator (or quitting its napari worker) stops it before the next batch.
    """
    arr = _check_image(image)
    period = check_period(period, arr.shape)
    net = resolve_model(model)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size is the number of tiles per batch (at least 1; None: chosen for the memory), not "
                         f"{batch_size!r}")
    info = model_info(net)
    dev = pick_device(device)
    net = net.to(dev).eval()
    network = _Network(net, compile)
    planes = arr.reshape(-1, *arr.shape[-2:])
    n = len(planes)
    out = np.empty(planes.shape, dtype=np.float32)
    upload, download = Uploader(dev, n), Downloader(out, dev)
    # on the device from the upload on; a stack's planes stay there from planning to the pass where they fit
    keep = n == 1 or n * planes[0].size * 5 <= KEEP_SHARE * _free_memory(dev)  # float32 and a mask byte per pixel

    floating = planes.dtype.kind == "f"
    wide = floating and planes.dtype.itemsize > 4  # float64: more range and precision than the pass

    # detector data at their type's ceiling: saturated pixels, whose true counts are lost
    top = float(np.iinfo(planes.dtype).max) if planes.dtype.kind in "ui" and planes.dtype.itemsize <= 2 else None
    saturated: dict[int, int] = {}

    def prepare(k: int) -> _Prepared:
        t = upload(planes[k])
        if top is not None and k not in saturated:
            saturated[k] = int((t == top).sum())
        p = _prepare(t, invert, floating)
        if wide and (p.bad or p.constant is not None):  # did float32 lose what the plane holds? (rare: looked at then)
            _check_float32_range(planes[k], f"plane {k}" if n > 1 else "the image")
        return p

    prepared: list[_Prepared] = []
    plans: list[Plan] = []
    chunk = lattice.GPU_PLANES if dev.type == "cuda" else 1
    blank = set()  # planes without a finite pixel
    estimate = rescale and period is None
    for s in range(0, n, chunk):  # plan every plane first so the total is known; a GPU estimates planes together
        part = [prepare(k) for k in range(s, min(n, s + chunk))]
        blank |= {s + i for i, p in enumerate(part) if p.bad == p.data.numel()}
        found = [p.data for p in part if p.constant is None]  # a constant plane (or a blank one) is not resampled
        ests = iter(lattice.estimate_periods(found) if estimate and found else [])
        plans += [plan_for(next(ests) if estimate and p.constant is None else period, info, rescale and p.constant is None)
                  for p in part]
        if keep:  # the intensity mapping taken here, where waiting for it holds no pass up: the passes run back to back
            for p in part:
                p.range = _intensity_range(p.data, info) if p.constant is None else None
        prepared += part if keep else [None] * len(part)
    if len(blank) == n:
        raise ValueError("the image has no finite pixels (all NaN or Inf)")
    if top is not None and sum(saturated.values()) > SATURATED * planes.size:
        warn(f"{sum(saturated.values())} pixel(s) ({100 * sum(saturated.values()) / planes.size:.2g} %) read "
             f"{top:.0f}, the most a {planes.dtype} pixel holds: the detector saturated there, the brightest "
             "columns' true heights are lost and the result cannot restore them (lower the detector gain)",
             DenoiseWarning, stacklevel=2)
    bs = batch_size
    shapes = [_scaled_shape(p.shape, pl.scale) for p, pl in zip(planes, plans)]
    tile_plans = [_plan(s, tile, overlap, net) for s in shapes]
    total = sum(len(t) for t in tile_plans)
    if bs is None:
        first = tile_plans[0][0]
        bs = _auto_batch(net, (first.rows.stop - first.rows.start) * (first.cols.stop - first.cols.start), dev, total)
    for note in sorted({pl.note for pl in plans if pl.notify}):
        warn(note, DenoiseWarning, stacklevel=2)
    first = next(k for k in range(n) if k not in blank)
    seen = (prepared[first] or prepare(first)).data
    note = contrast_note(seen, invert)
    if note:
        warn(note, DenoiseWarning, stacklevel=2)
    if period is not None and rescale and plans[first].scale != 1.0:
        note = period_note(period, lattice.estimate_period(seen))
        if note:
            warn(note, DenoiseWarning, stacklevel=2)
    del seen
    done = 0
    yield Progress(0, total, "start")
    for k in range(n):
        p = prepared[k] or prepare(k)
        prepared[k] = None
        if k in blank:
            warn(f"plane {k} has no finite pixels (all NaN or Inf): it is NaN in the output", DenoiseWarning,
                 stacklevel=2)
        elif p.bad:
            warn(
                f"{p.bad} NaN/Inf pixel(s) were replaced by the median for denoising and are NaN in the output",
                DenoiseWarning, stacklevel=2,
            )
        if p.constant is not None:  # one value (NaN for a blank plane): nothing to denoise, given back as it is
            if k not in blank:
                warn(f"the image{f' (plane {k})' if n > 1 else ''} is constant ({p.constant:g}): "
                     "nothing to denoise, returned as it is", DenoiseWarning, stacklevel=2)
            y = p.data
            done += len(tile_plans[k])
            yield Progress(done, total)
        else:
            lo, hi = p.range or _intensity_range(p.data, info)
            x = normalize_with(p.data, lo, hi, info.clip)
            p.data = None
            if plans[k].scale != 1.0:  # cubic spline: scipy on the CPU, torch on a GPU
                x = resample(x, shapes[k])
            y = None
            if _fits_whole(net, shapes[k], tile_plans[k], dev):
                y = yield from _whole_pass(net, x, dev, amp, done, len(tile_plans[k]), total, network)
                if y is not None:
                    yield Progress(done + len(tile_plans[k]), total)
            if y is None:
                y = yield from _tiled_pass(net, x, tile_plans[k], bs, dev, amp, done, total, network=network)
            del x
            done += len(tile_plans[k])
            if tuple(y.shape) != planes[k].shape:
                y = resample(y, planes[k].shape)
            y = denormalize(y, lo, hi)
        if invert:
            y = -y
        if p.finite is not None:
            y = torch.where(p.finite, y, torch.full((), torch.nan, device=y.device))
        download(k, y)  # the one copy back, into the result (on a GPU, while the next plane runs)
        del y, p
    download.finish()
    return out.reshape(arr.shape)


@dataclass
class _Prepared:
    """A plane on the device, ready for planning and the pass."""

    data: torch.Tensor | None  # float32, non-finite pixels filled with the median, contrast inverted where asked
    finite: torch.Tensor | None  # where the plane is finite, only when some pixels are not
    bad: int  # non-finite pixels
    constant: float | None  # the value of a plane that holds one value only (NaN: no finite pixel at all)
    range: tuple[float, float] | None = None  # the intensity mapping's [lo, hi] (:func:`_intensity_range`)


def _prepare(t: torch.Tensor, invert: bool, floating: bool) -> _Prepared:
    if invert:  # bright-field / ABF: the model sees ADF-like contrast, the result is turned back
        t = -t
    finite, bad = None, 0
    if floating:
        t, finite, bad = _fill_nonfinite(t)
        if bad == t.numel():  # nothing to denoise: NaN in the output
            return _Prepared(torch.full_like(t, torch.nan), None, bad, float("nan"))
    low, high = (float(v) for v in torch.aminmax(t))
    return _Prepared(t, finite, bad, low if low == high else None)


def _check_float32_range(plane: np.ndarray, name: str) -> None:
    """A ValueError where a float64 plane's finite values overflow float32 (denoising's type) or collapse to one value
    in it: the result would show them as NaN or as a constant image, which would hide what the data hold."""
    values = plane[np.isfinite(plane)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    top = max(abs(lo), abs(hi))
    if top > np.finfo(np.float32).max:
        raise ValueError(f"{name} holds values up to {top:.3g}, beyond the float32 range (3.4e38) that denoising works in: "
                         f"scale it down first (e.g. divide by {top:.0e})")
    if lo != hi and np.float32(lo) == np.float32(hi):
        raise ValueError(f"{name} holds values from {lo:.9g} to {hi:.9g}, which are all one value in the float32 that "
                         "denoising works in: subtract their offset or scale them up first")


def _fill_nonfinite(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """``t`` with its NaN/Inf pixels replaced by the median of the finite ones, where it was finite (None when all of
    it was), and how many pixels were not (all of them: ``t`` is returned as it is)."""
    finite = torch.isfinite(t)
    bad = t.numel() - int(finite.sum())
    if bad == 0:
        return t, None, 0
    if bad == t.numel():
        return t, finite, bad
    return torch.where(finite, t, torch.full((), _percentiles(t[finite], (50.0,))[0], dtype=t.dtype, device=t.device)), finite, bad


def _as_cancel(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def denoise(
    image,
    model: str | os.PathLike | nn.Module | None = None,
    *,
    tile: int | None = 512,
    overlap: int = 64,
    batch_size: int | None = None,
    device: str = "auto",
    period: float | None = None,
    rescale: bool = True,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    amp: bool = True,
    invert: bool = False,
    compile: bool = False,
) -> np.ndarray:
    """Denoise a 2D image (or each plane of a stack) and return float32 of the same shape.

    ``model``: a checkpoint path (reference ``*_net_G_A.pth`` or our ``.safetensors``), a
    module from :func:`load_generator`, or None for the bundled default. ``tile=None``
    runs the whole image in one pass; otherwise overlapping ``tile``-px tiles are blended
    with a smooth window and normalised with whole-image statistics. ``rescale``
    resamples the image to the model's training period (``period`` overrides the
    estimate, in px). ``progress`` receives a :class:`Progress` per batch; ``cancel``
    (a callable or ``threading.Event``) stops the run within one batch by raising
    :class:`Cancelled`. ``amp`` uses float16 autocast on CUDA (ignored elsewhere). ``invert``
    denoises a bright-field or ABF image (dark columns) as ADF contrast and turns the result back;
    an image that looks inverted without it gets a :class:`DenoiseWarning`. ``compile`` runs the network through
    ``torch.compile``: on a CPU about twice as fast once compiled, for 10-20 s of compiling at each new image size
    (worth it for many frames of one size); the pass then reports no layer progress and a cancel waits for its end.

    A dask array gives a lazy dask array of the same shape and chunks (:mod:`.lazy`), computed
    chunk by chunk when asked; ``progress`` and ``cancel`` then do not apply (dask's own
    progress bars and futures do).
    """
    from .lazy import denoise_lazy, is_dask

    if is_dask(image):
        if progress is not None or cancel is not None:
            raise ValueError("progress and cancel do not apply to a lazy (dask) result: it is computed when asked, e.g. with "
                             "dask.diagnostics.ProgressBar or a distributed client")
        if compile:
            raise ValueError("compile does not apply to a lazy (dask) result: its chunks go through the network as it is")
        return denoise_lazy(image, model, tile=tile, overlap=overlap, batch_size=batch_size, device=device, period=period,
                            rescale=rescale, amp=amp, invert=invert)
    gen = iter_denoise(image, model, tile=tile, overlap=overlap, batch_size=batch_size, device=device, period=period,
                       rescale=rescale, amp=amp, invert=invert, compile=compile)
    try:
        return drive(gen, progress, _as_cancel(cancel))
    except Stopped:
        raise Cancelled("denoising was cancelled") from None
    finally:  # also on Ctrl-C between two events: a forward pass still running in its thread stops and is waited for
        gen.close()
