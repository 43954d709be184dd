"""Compute devices: what torch can use here, and the one a setting names."""

from __future__ import annotations

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
    dev = torch.device(device)
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
