"""One writer per folder: a run folder while `ganzoo train` (or a bench cell) writes it, a report folder while
`ganzoo bench` drives it. A second command is refused at once, in one line, rather than waiting or mixing its
rows into the first one's files.

The lock is ``fcntl.flock`` on a file inside the folder. The kernel drops it when the holder exits, however it
exits (SIGKILL, out of memory), so there is no stale lock to clean up. It holds between processes on one
machine and, on Linux, across machines on NFS (flock is mapped to NFS byte-range locks there). It does not cover
filesystems or mounts without working locks (NFS mounted with ``nolock``, some FUSE and SMB mounts), where each
machine sees only its own locks; nor anything that writes without asking for the lock (a user's ``rm``, an
older ganzoo). The lock file itself is left in place: deleting it would let a newcomer lock a fresh file while
a holder still holds the old one.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import GanzooError

LOCK_FILE = ".ganzoo.lock"


@contextmanager
def hold(folder: Path | str, what: str) -> Iterator[None]:
    """Hold the folder's lock (creating the folder if needed) for the block, or raise GanzooError at once."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GanzooError(f"{what} {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise GanzooError(f"cannot use {what} {folder}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GanzooError(f"{what} {folder} is in use by another ganzoo process (it holds {folder / LOCK_FILE}); "
                              "wait for it to finish or choose another folder") from None
        except OSError as exc:  # e.g. ENOLCK: this filesystem offers no locks at all
            raise GanzooError(f"cannot lock {what} {folder}: {exc.strerror or exc}") from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
