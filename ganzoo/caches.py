"""Cache entries that ganzoo can always rebuild, safe to keep in a folder other users or machines write to.

Every entry is read with ``torch.load(weights_only=True)``, so a planted file cannot run code, and carries the
SHA-256 of its contents (tensors and plain data), so a damaged one is caught before it changes a score. A bad
entry is named on stderr, deleted and rebuilt by the caller.

torch-fidelity caches the real side's features and FID statistics itself, but reads them with a full unpickle.
So ganzoo never lets it see a shared folder: each evaluation gets a private temporary folder (mode 0700),
filled from ganzoo's verified entry, and whatever torch-fidelity computed there is saved back as an entry.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .errors import GanzooError
from .files import atomic_write
from .paths import cache_dir

FEATURES_FORMAT = "ganzoo-fidelity-cache"


def content_sha256(tensors: dict[str, torch.Tensor], plain: Any = None) -> str:
    """A hash of tensors (names, dtypes, shapes, values) and JSON-able plain data; not of a file's bytes,
    which hold metadata that differs between two saves of the same values."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    if plain is not None:
        h.update(json.dumps(plain, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_bytes(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_payload(path: Path) -> dict:
    """torch.load with weights_only=True; ValueError with the reason when the file is not a plain dict of data."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickled code, truncation, garbage: all mean "not usable"
        text = str(exc).strip()
        if "weights only" in text.lower() or "weights_only" in text:
            raise ValueError("it holds pickled code or objects other than tensors and plain data") from None
        raise ValueError(f"truncated or corrupt ({text.splitlines()[0] if text else type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise ValueError("not a ganzoo cache entry")
    return payload


def discard(path: Path, why: str) -> None:
    print(f"ganzoo: discarding the cache entry {path}: {why}; rebuilding it", file=sys.stderr)
    path.unlink(missing_ok=True)


# ---- torch-fidelity's real-side cache ----


def fidelity_entry(name: str) -> Path:
    return cache_dir() / "features" / f"{name}.pt"


@contextmanager
def fidelity_cache(name: Optional[str]) -> Iterator[Optional[str]]:
    """A private cache_root for one torch_fidelity.calculate_metrics call (None: no caching): it holds the
    verified entry `name`, and what torch-fidelity adds there is saved back when the call succeeds."""
    if name is None:
        yield None
        return
    path = fidelity_entry(name)
    items = _load_features(path, name)
    with tempfile.TemporaryDirectory(prefix="ganzoo-fidelity-") as private:
        for filename, value in items.items():
            torch.save(value, Path(private) / filename)
        yield private
        written = {p.name for p in Path(private).glob("*.pt")}
        if written != set(items):
            try:
                _save_features(path, name, {f: _read_fidelity_file(Path(private) / f) for f in sorted(written)})
            except GanzooError as exc:  # a read-only shared cache: the scores stand, the next call recomputes
                print(f"ganzoo: warning: could not cache features: {exc}", file=sys.stderr)


def _read_fidelity_file(path: Path) -> Any:
    """A file torch-fidelity just wrote in our private folder: tensors, or FID statistics as numpy arrays."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("float64")),
               type(np.dtype("float32"))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def _flatten(items: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """{file: tensor or {field: tensor or ndarray}} -> flat tensors, and the names that were numpy arrays."""
    tensors, numpy_names = {}, []
    for filename, value in items.items():
        fields = value.items() if isinstance(value, dict) else [(None, value)]
        for field, item in fields:
            key = filename if field is None else f"{filename}/{field}"
            if not isinstance(item, torch.Tensor):
                item = torch.from_numpy(item)
                numpy_names.append(key)
            tensors[key] = item
    return tensors, numpy_names


def _save_features(path: Path, name: str, items: dict[str, Any]) -> None:
    tensors, numpy_names = _flatten(items)
    plain = {"key": name, "files": sorted(items), "numpy": numpy_names}
    save_bytes(path, {"format": FEATURES_FORMAT, "version": 1, **plain, "tensors": tensors,
                      "sha256": content_sha256(tensors, plain)})


def _load_features(path: Path, name: str) -> dict[str, Any]:
    """The entry's files as torch-fidelity wrote them ({} when there is none, or it was bad and discarded)."""
    if not path.is_file():
        return {}
    try:
        payload = load_payload(path)
        plain = {k: payload.get(k) for k in ("key", "files", "numpy")}
        tensors = payload.get("tensors")
        if payload.get("format") != FEATURES_FORMAT or plain["key"] != name or not isinstance(tensors, dict):
            raise ValueError("not the ganzoo feature cache entry it is named as")
        if payload.get("sha256") != content_sha256(tensors, plain):
            raise ValueError("its contents do not match the SHA-256 recorded in it (damaged)")
    except ValueError as exc:
        discard(path, str(exc))
        return {}
    items: dict[str, Any] = {}
    for key, tensor in tensors.items():
        value = tensor.numpy() if key in plain["numpy"] else tensor
        filename, _, field = key.partition("/")
        if field:
            items.setdefault(filename, {})[field] = value
        else:
            items[filename] = value
    return items
