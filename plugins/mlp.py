"""Fully connected generator and discriminator, the classic MNIST GAN pair; also takes vector data (2-D points).

Option (``--arch-option key=value``): mbstd, a minibatch standard deviation layer before D's output layer.
"""
from torch import nn

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MBSTD_HELP, MinibatchStdDev
from ganzoo.specs import ArchitectureSpec, Option, SampleShape


class MLPGenerator(nn.Module):
    """latent -> 256 -> 512 -> 1024 -> C*H*W, tanh output. BatchNorm on the wider layers steadies training.

    For vectors (data that is not bounded to [-1, 1], like 2-D points) the output layer is linear."""

    def __init__(self, latent_dim: int, shape: SampleShape):
        super().__init__()
        self.shape = shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, shape.numel), *([nn.Tanh()] if shape.kind == "image" else []),
        )

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.shape.dims)


class MLPDiscriminator(nn.Module):
    """C*H*W -> 512 -> 256 -> 1, LeakyReLU; the 256-unit layer is the feature layer f."""

    def __init__(self, shape: SampleShape, mbstd: int = 0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(shape.numel, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
        )
        # minibatch std (option): one more input to the output layer; off, the module is exactly as before
        self.mbstd = MinibatchStdDev(mbstd) if mbstd else None
        self.head = nn.Linear(256 + (1 if mbstd else 0), 1)

    def forward(self, x):
        features = self.body(x)
        h = self.mbstd(features) if self.mbstd is not None else features
        return self.head(h).squeeze(1), features


def mlp(mbstd: int = 0) -> ArchitectureSpec:
    if mbstd < 0:
        raise GanzooError(f"architecture option mbstd must be a group size >= 0 (0: off), got {mbstd}")
    return ArchitectureSpec(
        name="mlp",
        description="MLP pair: G 100-256-512-1024-CxHxW (BatchNorm on 512 and 1024, tanh for images, linear for "
                    "vectors), D CxHxW-512-256-1 (LeakyReLU)" + (f", minibatch std (group {mbstd})" if mbstd else ""),
        build_generator=MLPGenerator,
        build_discriminator=lambda shape: MLPDiscriminator(shape, mbstd),
        paper="Goodfellow et al. 2014 (arXiv:1406.2661)"
              + ("; minibatch std: Karras et al. 2018 (arXiv:1710.10196)" if mbstd else ""),
        data=("image", "vector"),
        # late: runs trained before the option existed keep their keys while it is off
        options={"mbstd": Option(0, MBSTD_HELP, late=True)},
        configure=lambda options: mlp(options["mbstd"]),
    )


@hookimpl
def ganzoo_architectures():
    return [mlp()]
