"""Fully connected generator and discriminator, the classic MNIST GAN pair."""
from torch import nn

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ArchitectureSpec, ImageShape


class MLPGenerator(nn.Module):
    """latent -> 256 -> 512 -> 1024 -> C*H*W, tanh output. BatchNorm on the wider layers steadies training."""

    def __init__(self, latent_dim: int, shape: ImageShape):
        super().__init__()
        self.shape = shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, shape.numel), nn.Tanh(),
        )

    def forward(self, z):
        s = self.shape
        return self.net(z).view(z.shape[0], s.channels, s.size, s.size)


class MLPDiscriminator(nn.Module):
    """C*H*W -> 512 -> 256 -> 1, LeakyReLU; the 256-unit layer is the feature layer f."""

    def __init__(self, shape: ImageShape):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(shape.numel, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(256, 1)

    def forward(self, x):
        features = self.body(x)
        return self.head(features).squeeze(1), features


@hookimpl
def ganzoo_architectures():
    return [ArchitectureSpec(
        name="mlp",
        description="MLP pair: G 100-256-512-1024-CxHxW (tanh), D CxHxW-512-256-1 (LeakyReLU)",
        build_generator=MLPGenerator,
        build_discriminator=MLPDiscriminator,
        paper="Goodfellow et al. 2014 (arXiv:1406.2661)",
    )]
