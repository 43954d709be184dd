"""Compute devices: what torch can use here, and the one a setting names."""

from __future__ import annotations

import numpy as np
import torch


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; a named device must exist."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' (or 'cuda:N' for GPU number N) or 'mps', not {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if dev.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'")
    return dev


def devices() -> list[str]:
    """The compute devices torch can use here, named: ``cpu``, ``cuda:0 (NVIDIA H200)``, ``mps``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def available_devices() -> list[str]:
    """The choices of a device setting: ``auto`` (the fastest found), then each kind of device found."""
    kinds = {d.split(":")[0].split(" ")[0] for d in devices()}
    return ["auto", *(k for k in ("cuda", "mps") if k in kinds), "cpu"]


def _cgroup_room(root: str, proc_cgroup: str) -> int | None:
    """Bytes left under the memory limit of this process's cgroup or any cgroup above it (a container, a SLURM job),
    v2 or v1; None where none is set or it cannot be read."""
    from pathlib import Path

    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    room = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # v2
            base, limit_name, usage_name = Path(root), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            base, limit_name, usage_name = Path(root) / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        d = base / path.lstrip("/")
        while True:  # the process's own cgroup and every one above it
            try:
                limit = (d / limit_name).read_text().strip()
                usage = int((d / usage_name).read_text().strip())
                if limit.isdigit() and int(limit) < 2**60:
                    left = max(0, int(limit) - usage)
                    room = left if room is None else min(room, left)
            except (OSError, ValueError):
                pass
            if d == base or d.parent == d:
                break
            d = d.parent
    return room


def available_memory(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """Bytes of RAM this process may still fill: what the system has available, bounded by a container's or a job's
    cgroup limit (psutil sees the whole machine) and by an address-space limit (``ulimit -v``) where one is set."""
    import psutil

    free = psutil.virtual_memory().available
    room = _cgroup_room(root, proc_cgroup)
    if room is not None:
        free = min(free, room)
    try:
        import resource
    except ImportError:  # Windows
        return free
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        free = min(free, max(0, soft - psutil.Process().memory_info().vms))
    return free


class Uploader:
    """Planes of a host image to a device as float32 tensors, one call per plane.

    On the CPU a float32 plane is used where it lies (no copy). On CUDA a stack's planes go through two pinned staging
    buffers from torch's caching host allocator: a pinned transfer runs at the bus's full rate, and copying the next
    plane into one buffer overlaps the transfer from the other. Integer planes travel in their own type (half the
    bytes of float32 for 16-bit data) and are converted on the device.
    """

    TRAVEL = (np.float32, np.float16, np.uint8, np.int8, np.int16, np.int32)  # types torch moves and converts as they are

    def __init__(self, device: torch.device, planes: int = 1):
        self.device = device
        self.pinned = device.type == "cuda" and planes > 1
        self.slots: list[tuple[torch.Tensor, torch.cuda.Event] | None] = [None, None]
        self.turn = 0

    def __call__(self, plane: np.ndarray) -> torch.Tensor:
        src = np.asarray(plane)
        if self.device.type == "cpu":
            src = np.ascontiguousarray(src, dtype=np.float32)
            # a read-only array (a memory map, a napari layer's data): a copy, as torch does not share read-only memory
            return torch.from_numpy(src if src.flags.writeable else src.copy())
        if src.dtype.type not in self.TRAVEL or not src.dtype.isnative:
            src = src.astype(np.float32)
        src = np.ascontiguousarray(src)
        if not self.pinned:
            return torch.from_numpy(src).to(self.device).float()
        slot = self.slots[self.turn]
        if slot is None or tuple(slot[0].shape) != src.shape or slot[0].numpy().dtype != src.dtype:
            buf = torch.from_numpy(np.empty(src.shape, src.dtype)).pin_memory()
        else:
            buf = slot[0]
            slot[1].synchronize()  # the transfer out of this buffer has finished
        buf.numpy()[...] = src
        t = buf.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.slots[self.turn] = (buf, done)
        self.turn ^= 1
        return t.float()


class Downloader:
    """Result planes from a device into the host array ``out`` (planes along its first axis), one call per plane.

    On the CPU, and for a single image, the plane is copied in at once. On CUDA a stack's planes go out through two
    pinned buffers: the transfer of plane k is queued behind its work and lands in ``out`` only when its buffer is
    needed again (two planes later) or at :meth:`finish`, so the device goes on with plane k + 1 while it travels,
    where a copy into pageable memory would hold the host until the device had finished. ``staged=True`` takes the
    buffered path on any device (plain buffers where nothing is pinned): the bookkeeping tested without a GPU.
    """

    def __init__(self, out: np.ndarray, device: torch.device, staged: bool | None = None):
        self.out = out
        cuda = device.type == "cuda"
        self.staged = (cuda and len(out) > 1) if staged is None else staged
        self.pin = cuda
        self.slots: list[tuple[int, torch.Tensor, torch.cuda.Event | None] | None] = [None, None]
        self.turn = 0

    def __call__(self, k: int, plane: torch.Tensor) -> None:
        if not self.staged:
            torch.from_numpy(self.out[k]).copy_(plane)
            return
        slot = self.slots[self.turn]
        if slot is not None:
            self._land(slot)
        if slot is not None and tuple(slot[1].shape) == tuple(plane.shape):
            buf = slot[1]
        else:
            buf = torch.empty(tuple(plane.shape), dtype=torch.float32, pin_memory=self.pin)
        buf.copy_(plane, non_blocking=self.pin)
        done = None
        if self.pin:
            done = torch.cuda.Event()
            done.record()
        self.slots[self.turn] = (k, buf, done)
        self.turn ^= 1

    def _land(self, slot) -> None:
        k, buf, done = slot
        if done is not None:
            done.synchronize()  # the transfer into this buffer has finished
        self.out[k][...] = buf.numpy()

    def finish(self) -> None:
        """Land the planes still on their way (the older first)."""
        for i in (self.turn, self.turn ^ 1):
            if self.slots[i] is not None:
                self._land(self.slots[i])
                self.slots[i] = None
