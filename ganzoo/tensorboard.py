"""TensorBoard logging of a run while it trains (TrainConfig.tensorboard, `--tensorboard`).

One TensorBoard run per ganzoo run, in `<run folder>/tensorboard/`, so `tensorboard --logdir bench/runs` sets a
benchmark's runs side by side. It mirrors what the run writes anyway: every log.csv value (each loss term,
penalty, mean D outputs), images/second, the in-training IS/FID/KID and a sample grid from fixed latents at each
evaluation. A resumed run writes a new event file whose start marker tells TensorBoard to drop the older
events past the checkpoint (torch's `purge_step`), so every step is shown once.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from .errors import GanzooError

FOLDER = "tensorboard"
TAGS = {"d_loss": "loss/discriminator", "g_loss": "loss/generator", "d_real": "D/real", "d_fake": "D/generated"}


def _tag(column: str) -> str:
    """log.csv column -> TensorBoard tag: the fixed ones by name, an augmentation's state (ADA's augment_p) under
    augment/, penalties under penalty/."""
    if column.startswith("augment_"):
        return f"augment/{column[len('augment_'):]}"
    return TAGS.get(column, f"penalty/{column}")


def require_tensorboard() -> None:
    """Fail before training, in one line, when the optional dependency is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - imports the tensorboard package
    except ImportError:
        raise GanzooError("--tensorboard needs the tensorboard package: pip install 'ganzoo[tensorboard]' "
                          "(or pip install tensorboard)") from None


class TensorBoardLog:
    def __init__(self, run_folder: Path, resumed_at: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after the first step this session trains, left by an interrupted session
        # between its last checkpoint and its end, are superseded by what this session writes
        self.writer = SummaryWriter(str(run_folder / FOLDER), purge_step=resumed_at + 1 if resumed_at else None)

    def steps(self, first_step: int, rows: torch.Tensor, columns: Sequence[str], images_per_s: float) -> None:
        """rows: one row per step from first_step on, in log.csv's order of `columns` (step and time excluded)."""
        for i, values in enumerate(rows.tolist()):
            for column, value in zip(columns, values):
                if not math.isnan(value):  # a lazy penalty on a step it skips
                    self.writer.add_scalar(_tag(column), value, first_step + i)
        self.writer.add_scalar("speed/images_per_s", images_per_s, first_step + len(rows) - 1)

    def evaluation(self, step: int, metrics: dict, samples: torch.Tensor, real: Optional[torch.Tensor] = None) -> None:
        """metrics: the eval.csv row's values; samples: from the run's fixed latents (uint8 images, drawn as a grid,
        or vectors, drawn as a scatter plot over `real` points)."""
        from .sampling import picture

        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                self.writer.add_scalar(f"eval/{name}", value, step)
        self.writer.add_image("samples", picture(samples, real, nrow=8), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
