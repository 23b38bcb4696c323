"""Building blocks for discriminator penalties (specs.Penalty): the input gradient and the points it is taken at.

Every gradient penalty in the zoo reduces to "the L2 norm of each sample's gradient of D with respect to its
whole input, at some points". Getting that norm right is where public code goes wrong (a norm over the wrong
dimension, a graph not kept for the second backward), so it lives here once and is tested against closed forms.
"""
from __future__ import annotations

from typing import Callable

import torch

from .specs import DiscriminatorOutput


def input_gradients(discriminate: Callable[[torch.Tensor], DiscriminatorOutput], points: torch.Tensor) -> torch.Tensor:
    """d(sum of D's scores)/d(points), shaped like `points`, with the graph kept so that a penalty built on it
    trains D (a second backward through the gradient). Each score depends only on its own sample, so row i is
    the gradient of D(x_i) alone."""
    points = points.detach().requires_grad_(True)
    scores = discriminate(points).logits
    (gradients,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return gradients


def gradient_norms(discriminate: Callable[[torch.Tensor], DiscriminatorOutput], points: torch.Tensor) -> torch.Tensor:
    """(B,) the L2 norm of each sample's input gradient over all of its channels and pixels."""
    gradients = input_gradients(discriminate, points)
    return gradients.flatten(start_dim=1).norm(2, dim=1)


def interpolates(real: torch.Tensor, other: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Points on the segments between paired samples, one uniform position per sample (WGAN-GP, DRAGAN)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, generator=rng)
    return (real + alpha * (other - real)).detach()
