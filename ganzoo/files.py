"""Crash-safe file writes: write beside the target, fsync, then rename over it (atomic on POSIX)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import GanzooError


def atomic_write(path: Path | str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call write(fileobj) on a temporary file in the same folder, then move it onto path.

    The file gets the mode a plain open() would give (0666 less the umask), not mkstemp's private 0600, so that
    reports, runs and caches are as readable by a team as the folders they are in. A path that cannot be
    written (a folder, no permission, no space) is a GanzooError naming it."""
    path = Path(path)
    if path.is_dir():
        raise GanzooError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise GanzooError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise GanzooError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path | str, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True) + "\n"), mode="w")


def read_json(path: Path | str, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GanzooError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GanzooError(f"{what} {path} is corrupt (not valid JSON: {exc})") from None
