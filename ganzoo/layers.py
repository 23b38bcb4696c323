"""Layers that architectures share. A plugin may use them too (``from ganzoo.layers import MinibatchStdDev``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN section 3): a remedy for mode collapse.

    The batch is cut into groups of `group` samples (sample i joins group i mod B/group, as ProGAN does); within
    each group the standard deviation of every feature over the group's samples is taken and averaged into one
    number, which is appended to each of the group's samples as one extra feature (vectors, B x F -> B x F+1) or
    one extra constant channel (feature maps, B x C x H x W -> B x C+1 x H x W). D then sees how varied a batch is,
    and a generator that repeats itself is easy to reject. B must be a multiple of the group (check_batch).
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def check_batch(self, n: int) -> Optional[str]:
        """Why batches of n samples cannot pass (None when they can)."""
        if n < self.group or n % self.group:
            return (f"the minibatch standard deviation layer takes groups of {self.group} samples, so the "
                    f"discriminator's batch ({n}) must be a multiple of {self.group}")
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        problem = self.check_batch(b)
        if problem:
            raise ValueError(problem)
        grouped = x.reshape(self.group, b // self.group, *x.shape[1:])
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (B/group, ...): per feature, over the group
        statistic = std.reshape(b // self.group, -1).mean(dim=1)  # (B/group,): one number per group
        extra = statistic.repeat(self.group)  # sample i gets its group's number (groups interleave, as above)
        extra = extra.reshape(b, 1, *([1] * (x.dim() - 2))).expand(b, 1, *x.shape[2:])
        return torch.cat([x, extra.to(x.dtype)], dim=1)


MBSTD_HELP = ("minibatch standard deviation layer before D's last layer, groups of this many samples "
              "(Karras et al. 2018; 0: off, 4 as published)")
