"""A run folder: what training writes, and how a finished or interrupted run is read back.

    config.json     the full resolved config (and what it resolved to: plugins, dataset split, versions)
    run.json        status (running / completed / diverged), step, final stats, checkpoint SHA-256
    log.csv         one row per step: step, d_loss, g_loss, d_real, d_fake, time_s
    checkpoint.pt   generator, discriminator, optimizers, noise RNG: enough to resume bit-identically
    samples.png     a grid of generated samples from fixed noise
    eval.csv        with --eval-every: step, is_mean, is_std, fid, kid_mean, kid_std [, classes_covered, class_kl]
    eval.json       the protocol those in-training scores were computed under
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from .config import TrainConfig
from .errors import GanzooError
from .files import read_json

CONFIG_FILE = "config.json"
STATUS_FILE = "run.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
GRID_FILE = "samples.png"
EVAL_FILE = "eval.csv"
EVAL_PROTOCOL_FILE = "eval.json"
RUN_FILES = (CONFIG_FILE, STATUS_FILE, LOG_FILE, CHECKPOINT_FILE, GRID_FILE, EVAL_FILE, EVAL_PROTOCOL_FILE)
LOG_COLUMNS = ("step", "d_loss", "g_loss", "d_real", "d_fake", "time_s")


@dataclass
class Run:
    """A training run as stored on disk."""

    path: Path
    config: TrainConfig
    status: str  # "running" (or interrupted), "completed", "diverged"
    step: int  # steps completed
    stats: dict[str, Any] = field(default_factory=dict)  # final losses, wall time, images/second, error

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def grid(self) -> Path:
        return self.path / GRID_FILE

    def read_log(self):
        """The per-step log as a pandas DataFrame."""
        import pandas as pd

        return pd.read_csv(self.log)

    def read_eval(self):
        """The in-training scores (eval.csv) as a pandas DataFrame; empty when the run was not evaluated."""
        import pandas as pd

        path = self.path / EVAL_FILE
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def open_run(path: Path | str) -> Run:
    """Read a run folder written by ganzoo.train (any status)."""
    path = Path(path)
    if not path.is_dir():
        raise GanzooError(f"run folder not found: {path}")
    if not (path / CONFIG_FILE).is_file():
        raise GanzooError(f"{path} is not a ganzoo run folder (no {CONFIG_FILE})")
    resolved = read_json(path / CONFIG_FILE, "run config")
    try:
        config = TrainConfig.from_dict(resolved["config"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise GanzooError(f"run config {path / CONFIG_FILE} is malformed ({exc})") from None
    status = read_json(path / STATUS_FILE, "run status") if (path / STATUS_FILE).is_file() else {}
    step = status.get("step", 0) if isinstance(status, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(status.get("status", ""), str):
        raise GanzooError(f"run status {path / STATUS_FILE} is malformed (expected an object with an integer step)")
    return Run(path, config, status.get("status", "running"), step, status)


def resumable_rows(path: Path, upto: int, expected: Optional[Iterable[int]] = None) -> list[str]:
    """The lines of a per-step CSV (log.csv, eval.csv) to keep when resuming from the checkpoint at step `upto`:
    the file's own header (its first column must be `step`), then its rows up to that step, each a full row of
    numbers, steps increasing and, when `expected` is given, exactly those steps. Rows past the checkpoint, and a
    last line cut short (written after the checkpoint's fsync), are dropped: they are trained again. Anything
    else is damage that cannot be repaired exactly, refused naming the file."""

    def damaged(why: str) -> GanzooError:
        return GanzooError(f"{path} is damaged ({why}), so the run cannot resume from its checkpoint at step {upto}; "
                           "restore the file or pass --overwrite to train again")

    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        raise damaged("missing") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise damaged(f"unreadable: {exc}") from None
    if not lines or lines[0].rstrip("\n").split(",")[0] != "step":
        raise damaged("no header line starting with 'step'")
    width = len(lines[0].split(","))
    kept, steps = [lines[0]], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\n").split(",")
        try:
            step = int(fields[0])
            [float(v) for v in fields[1:] if v]  # an empty cell: a lazy penalty's skipped step
            complete = len(fields) == width and line.endswith("\n")
        except ValueError:
            complete = False
        if not complete:
            if number == len(lines) and not line.endswith("\n"):
                break  # the last write, cut short
            raise damaged(f"line {number} is not a row of {width} numbers")
        if step > upto:
            break
        if steps and step <= steps[-1]:
            raise damaged(f"step {step} at line {number} repeats or goes back")
        kept.append(line)
        steps.append(step)
    if expected is not None:
        missing = sorted(set(expected) - set(steps))
        extra = sorted(set(steps) - set(expected))
        if missing or extra:
            which = f"step {missing[0]} is missing" if missing else f"it has an unexpected step {extra[0]}"
            raise damaged(f"{which}; {len(steps)} rows up to step {upto}")
    return kept
