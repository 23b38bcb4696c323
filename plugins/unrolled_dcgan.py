"""unrolled-dcgan: the small DCGAN of the Unrolled GAN paper's Stacked MNIST experiment (setting "U").

As the PacGAN code re-implements it (stacked_MNIST_experiments/unrolled_GAN_experiment): for 28x28 images,
  G: z -> linear 4x4x64, BN, ReLU -> 3x3 transposed convolutions (stride 2) to 7x7x32, 14x14x16, 28x28x8, each
     with BN and ReLU -> 3x3 convolution to the image's channels -> tanh;
  D: three 3x3 stride-2 convolutions (28 -> 14 -> 7 -> 4), each with BN and LeakyReLU(0.3), -> linear score,
     with channels a fraction of G's: 2, 4, 8 at d_fraction 0.25 (D = 1/4 G), 4, 8, 16 at 0.5.
The smaller D is, the more the plain GAN collapses: that is what the setting measures. The published runs use
z of 256 dimensions (latent_dim = 256), Adam with beta1 0.5 and beta2 0.99 (D lr 2e-4, G lr 1e-4; ganzoo
trains both at one lr) and batches of 128. Option mbstd adds a minibatch standard deviation channel before
D's output layer.
"""
from torch import nn

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MBSTD_HELP, MinibatchStdDev
from ganzoo.specs import ArchitectureSpec, ImageShape, Option

G_CHANNELS = (64, 32, 16, 8)  # of the 4x4, 7x7, 14x14 and 28x28 maps
FRACTIONS = (0.25, 0.5, 1.0)


def _init(module: nn.Module) -> nn.Module:
    for m in module.modules():  # DCGAN-tensorflow's initialisers, which the published code uses
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class UnrolledGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: ImageShape):
        super().__init__()
        c = G_CHANNELS
        self.project = nn.Sequential(nn.Linear(latent_dim, c[0] * 16), nn.Unflatten(1, (c[0], 4, 4)),
                                     nn.BatchNorm2d(c[0]), nn.ReLU())
        self.upsample = nn.Sequential(  # 4 -> 7 -> 14 -> 28
            nn.ConvTranspose2d(c[0], c[1], 3, 2, 1), nn.BatchNorm2d(c[1]), nn.ReLU(),
            nn.ConvTranspose2d(c[1], c[2], 3, 2, 1, output_padding=1), nn.BatchNorm2d(c[2]), nn.ReLU(),
            nn.ConvTranspose2d(c[2], c[3], 3, 2, 1, output_padding=1), nn.BatchNorm2d(c[3]), nn.ReLU(),
            nn.Conv2d(c[3], shape.channels, 3, 1, 1), nn.Tanh())
        _init(self)

    def forward(self, z):
        return self.upsample(self.project(z))


class UnrolledDiscriminator(nn.Module):
    def __init__(self, shape: ImageShape, fraction: float = 0.25, mbstd: int = 0):
        super().__init__()
        widths = [max(1, round(c * fraction)) for c in reversed(G_CHANNELS[1:])]  # 8, 16, 32 scaled
        layers, c_in = [], shape.channels
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.3)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev(mbstd) if mbstd else None
        self.head = nn.Linear((c_in + (1 if mbstd else 0)) * 4 * 4, 1)
        _init(self)

    def forward(self, x):
        maps = self.body(x)
        features = maps.flatten(1)
        h = self.mbstd(maps).flatten(1) if self.mbstd is not None else features
        return self.head(h).squeeze(1), features


def unrolled_dcgan(d_fraction: float = 0.25, mbstd: int = 0) -> ArchitectureSpec:
    if d_fraction not in FRACTIONS:
        raise GanzooError(f"architecture option d_fraction must be one of {', '.join(map(str, FRACTIONS))} (D's "
                          f"channels as a share of G's), got {d_fraction}")
    if mbstd < 0:
        raise GanzooError(f"architecture option mbstd must be a group size >= 0 (0: off), got {mbstd}")
    return ArchitectureSpec(
        name="unrolled-dcgan",
        description=f"the small DCGAN of Unrolled GAN's Stacked MNIST experiment, 28x28: G 64-32-16-8 channels, "
                    f"D at {d_fraction:g} of G's channels" + (f", minibatch std (group {mbstd})" if mbstd else ""),
        build_generator=UnrolledGenerator,
        build_discriminator=lambda shape: UnrolledDiscriminator(shape, d_fraction, mbstd),
        paper="Metz et al. 2017, Unrolled GANs (arXiv:1611.02163), appendix; as re-implemented by Lin et al. 2018 "
              "(PacGAN, arXiv:1712.04086)",
        image_sizes=(28,),
        options={"d_fraction": Option(0.25, "D's channels as a share of G's: 0.25 or 0.5 as published (1.0 too)"),
                 "mbstd": Option(0, MBSTD_HELP, late=True)},
        configure=lambda options: unrolled_dcgan(options["d_fraction"], options["mbstd"]),
    )


@hookimpl
def ganzoo_architectures():
    return [unrolled_dcgan()]
