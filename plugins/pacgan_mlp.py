"""pacgan-mlp: the networks of the 2-D mixture experiments, as the PacGAN code (after VEEGAN's) builds them.

G: latent -> 4 fully connected layers of 400 units, each with BatchNorm and ReLU -> a linear output of the
data's dimension. D: 3 maxout layers of 200 units with 5 pieces each -> one linear score. Weights from
N(0, 0.02), biases 0 (its weights_init_std and biases_init). With packing (PacGAN), D's input is m points side by
side; nothing else changes. The published runs use a 2-dimensional standard normal latent (latent_dim = 2),
Adam 1e-4 with beta1 0.8 and batches of 100: benchmarks/mode_collapse.toml sets those.
"""
import torch
from torch import nn

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MBSTD_HELP, MinibatchStdDev
from ganzoo.specs import ArchitectureSpec, Option, VectorShape


def _init(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class Maxout(nn.Module):
    """A linear map to units x pieces outputs, then the maximum over each unit's pieces (Goodfellow et al. 2013)."""

    def __init__(self, d_in: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(d_in, units * pieces)

    def forward(self, x):
        return self.linear(x).view(x.shape[0], self.units, self.pieces).max(dim=2).values


class MixtureGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: VectorShape, width: int = 400, layers: int = 4):
        super().__init__()
        blocks, d = [], latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()]
            d = width
        self.net = _init(nn.Sequential(*blocks, nn.Linear(d, shape.features)))

    def forward(self, z):
        return self.net(z)


class MixtureDiscriminator(nn.Module):
    """The last maxout layer's 200 units are the features f (feature matching, projection heads)."""

    def __init__(self, shape: VectorShape, units: int = 200, pieces: int = 5, layers: int = 3, mbstd: int = 0):
        super().__init__()
        blocks, d = [], shape.features
        for _ in range(layers):
            blocks.append(Maxout(d, units, pieces))
            d = units
        self.body = nn.Sequential(*blocks)
        self.mbstd = MinibatchStdDev(mbstd) if mbstd else None
        self.head = nn.Linear(d + (1 if mbstd else 0), 1)
        _init(self)

    def forward(self, x):
        features = self.body(x)
        h = self.mbstd(features) if self.mbstd is not None else features
        return self.head(h).squeeze(1), features


def pacgan_mlp(mbstd: int = 0) -> ArchitectureSpec:
    if mbstd < 0:
        raise GanzooError(f"architecture option mbstd must be a group size >= 0 (0: off), got {mbstd}")
    return ArchitectureSpec(
        name="pacgan-mlp",
        description="the 2-D mixture networks of the PacGAN/VEEGAN code: G 4 x 400 (BatchNorm, ReLU), linear "
                    "output; D 3 maxout layers of 200 units x 5 pieces" + (f", minibatch std (group {mbstd})"
                                                                           if mbstd else ""),
        build_generator=MixtureGenerator,
        build_discriminator=lambda shape: MixtureDiscriminator(shape, mbstd=mbstd),
        paper="Lin et al. 2018, PacGAN (arXiv:1712.04086), after Srivastava et al. 2017, VEEGAN (arXiv:1705.07761)",
        data=("vector",),
        options={"mbstd": Option(0, MBSTD_HELP, late=True)},
        configure=lambda options: pacgan_mlp(options["mbstd"]),
    )


@hookimpl
def ganzoo_architectures():
    return [pacgan_mlp()]
