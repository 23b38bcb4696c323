"""Pick the device: CUDA when present, else CPU; an explicit choice is checked, not silently replaced."""
from __future__ import annotations

import torch

from .errors import GanzooError


def resolve_device(name: str | None = "auto") -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GanzooError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanzooError(f"device '{name}' requested but CUDA is not available on this machine")
    return device
