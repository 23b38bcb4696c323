"""DCGAN-style convolutional pair for small images (28x28 or 32x32, any channel count).

Two stride-2 (transposed) convolutions between the image and a (size/4)^2 feature map, BatchNorm in both
networks except the discriminator's input layer and the generator's output layer, ReLU in G and LeakyReLU(0.2)
in D, as Radford et al. recommend; weights start from N(0, 0.02).
"""
from torch import nn

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ArchitectureSpec, ImageShape

WIDTH = 64  # channels of the first D layer / last G layer; the inner layers have twice as many


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: ImageShape):
        super().__init__()
        self.base = shape.size // 4
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * WIDTH * self.base * self.base, bias=False),
            nn.BatchNorm1d(2 * WIDTH * self.base * self.base), nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * WIDTH, WIDTH, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU(),
            nn.ConvTranspose2d(WIDTH, shape.channels, 4, 2, 1), nn.Tanh(),
        )
        _dcgan_init(self)

    def forward(self, z):
        h = self.project(z).view(z.shape[0], 2 * WIDTH, self.base, self.base)
        return self.upsample(h)


class DCGANDiscriminator(nn.Module):
    def __init__(self, shape: ImageShape):
        super().__init__()
        base = shape.size // 4
        self.body = nn.Sequential(
            nn.Conv2d(shape.channels, WIDTH, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(WIDTH, 2 * WIDTH, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * WIDTH), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * WIDTH * base * base, 1)
        _dcgan_init(self)

    def forward(self, x):
        features = self.body(x)
        return self.head(features).squeeze(1), features


@hookimpl
def ganzoo_architectures():
    return [ArchitectureSpec(
        name="dcgan",
        description="DCGAN-style conv pair (2 stride-2 layers each, BatchNorm) for 28x28 or 32x32 images",
        build_generator=DCGANGenerator,
        build_discriminator=DCGANDiscriminator,
        paper="Radford et al. 2016, Unsupervised Representation Learning with DCGANs (arXiv:1511.06434)",
        image_sizes=(28, 32),
    )]
