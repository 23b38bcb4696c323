"""Checkpoints hold only tensors and plain Python data, so they load with torch.load(weights_only=True).

A checkpoint that carries pickled code is refused rather than executed; a truncated or edited one is named
with what is wrong. Run folders record the SHA-256 of their checkpoint, so a file changed after training is
caught too.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import GanzooError
from .files import atomic_write

FORMAT = "ganzoo-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "config", "step", "generator", "discriminator")


def save(path: Path | str, payload: dict[str, Any]) -> str:
    """Write atomically; returns the file's SHA-256."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(path: Path | str, expected_sha256: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GanzooError(f"no checkpoint at {path}")
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise GanzooError(f"checkpoint {path} does not match the SHA-256 recorded when it was written "
                          "(changed or damaged since); refusing to use it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise GanzooError(f"refusing to load {path}: it contains pickled code or objects other than tensors "
                              "and plain data (ganzoo loads checkpoints with weights_only=True)") from None
        raise GanzooError(f"checkpoint {path} is corrupt: {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GanzooError(f"checkpoint {path} is truncated or corrupt: {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise GanzooError(f"{path} is not a ganzoo checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise GanzooError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if payload["version"] != VERSION:
        raise GanzooError(f"checkpoint {path} has format version {payload['version']}; "
                          f"this ganzoo reads version {VERSION}")
    return payload


def load_state(module: torch.nn.Module, state: dict, path: Path | str, what: str) -> None:
    """load_state_dict with a one-line error when shapes or keys do not match the architecture."""
    mismatch = state_mismatch(module, state) if isinstance(state, dict) else ""
    if mismatch:  # torch's own message puts the keys on lines after its first: name them here
        raise GanzooError(f"checkpoint {path}: the {what} weights do not fit the architecture "
                          f"({type(module).__name__}: {mismatch})")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise GanzooError(f"checkpoint {path}: the {what} weights do not fit the architecture ({first})") from None


def state_mismatch(module: torch.nn.Module, state: dict, shown: int = 5) -> str:
    """What keeps `state` from loading into `module`, in one line: missing and unexpected keys and tensors of
    another shape ("" when they fit). A network that gained a buffer or a layer since the checkpoint was
    written shows up here by name."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} here" for k, v in expected.items()
                if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    parts = [f"{label} {_listed(keys, shown)}" for label, keys in (("missing keys", missing),
                                                                   ("unexpected keys", unexpected),
                                                                   ("other shapes", reshaped)) if keys]
    return "; ".join(parts)


def _listed(items: list[str], shown: int) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
