"""DCGAN-style convolutional pair for 28x28 and power-of-two sizes from 16 to 128, any channel count.

Radford et al.'s layout: one stride-2 (transposed) convolution per doubling of the image size, channels halving
towards the image in G and doubling away from it in D; BatchNorm in both networks except the discriminator's
input layer and the generator's output layer; ReLU in G and LeakyReLU(0.2) in D; weights from N(0, 0.02).
Where Radford's stack goes on down to 4x4, ours stops at 8x8 (7x7 for 28x28) and a linear layer joins it to the
noise and to the score, as ganzoo's first 28/32 networks did: those two sizes keep their exact modules, so
their checkpoints still load and their runs are unchanged.

Options (``--arch-option key=value``): width (channels of D's first and G's last hidden layer, default 64),
spectral_norm (spectral normalisation of every D weight, default false) and mbstd (a minibatch standard deviation
layer before D's output layer, default 0: off).
"""
import math

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MBSTD_HELP, MinibatchStdDev
from ganzoo.specs import ArchitectureSpec, ImageShape, Option

SIZES = (16, 28, 32, 64, 128)
WIDTH = 64  # the default width


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _layout(size: int) -> tuple[int, int]:
    """(side of the smallest feature map, number of stride-2 layers between it and the image)."""
    if size not in SIZES:
        raise GanzooError(f"architecture 'dcgan' supports image sizes {SIZES}, got {size}x{size}")
    base = 7 if size == 28 else 8
    return base, int(math.log2(size // base))


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: ImageShape, width: int = WIDTH):
        super().__init__()
        self.base, n = _layout(shape.size)
        self.channels = width * 2 ** (n - 1)  # of the smallest map; halved by every layer but the last
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.channels * self.base * self.base, bias=False),
            nn.BatchNorm1d(self.channels * self.base * self.base), nn.ReLU(),
        )
        layers, c = [], self.channels
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        self.upsample = nn.Sequential(*layers, nn.ConvTranspose2d(c, shape.channels, 4, 2, 1), nn.Tanh())
        _dcgan_init(self)

    def forward(self, z):
        h = self.project(z).view(z.shape[0], self.channels, self.base, self.base)
        return self.upsample(h)


class DCGANDiscriminator(nn.Module):
    def __init__(self, shape: ImageShape, width: int = WIDTH, spectral_norm: bool = False, mbstd: int = 0):
        super().__init__()
        base, n = _layout(shape.size)
        layers, c = [nn.Conv2d(shape.channels, width, 4, 2, 1), nn.LeakyReLU(0.2)], width
        for _ in range(n - 1):
            if spectral_norm:  # SNGAN's D has no BatchNorm: SN alone bounds each layer (Miyato et al. 2018)
                layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2)]
            else:  # no bias: the BatchNorm after it has one
                layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        # minibatch std (option): one more channel of the last feature map goes into the head; off, D is unchanged
        self.mbstd = MinibatchStdDev(mbstd) if mbstd else None
        self.head = nn.Linear((c + (1 if mbstd else 0)) * base * base, 1)
        _dcgan_init(self)
        if spectral_norm:  # after the N(0, 0.02) init: SN rescales whatever weights it is given
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    apply_spectral_norm(m)

    def forward(self, x):
        if self.mbstd is None:
            features = self.body(x)
            return self.head(features).squeeze(1), features
        maps = self.body[:-1](x)
        features = maps.flatten(1)
        return self.head(self.mbstd(maps).flatten(1)).squeeze(1), features


def dcgan(width: int = WIDTH, spectral_norm: bool = False, mbstd: int = 0) -> ArchitectureSpec:
    if width < 1:
        raise GanzooError(f"architecture option width must be a positive integer, got {width}")
    if mbstd < 0:
        raise GanzooError(f"architecture option mbstd must be a group size >= 0 (0: off), got {mbstd}")
    return ArchitectureSpec(
        name="dcgan",
        description=f"DCGAN conv pair for 28x28 and 16-128 (one stride-2 layer per doubling above 8x8, "
                    f"BatchNorm), width {width}"
                    + (", spectral norm in D (no BatchNorm there)" if spectral_norm else "")
                    + (f", minibatch std (group {mbstd})" if mbstd else ""),
        build_generator=lambda latent_dim, shape: DCGANGenerator(latent_dim, shape, width),
        build_discriminator=lambda shape: DCGANDiscriminator(shape, width, spectral_norm, mbstd),
        paper="Radford et al. 2016, Unsupervised Representation Learning with DCGANs (arXiv:1511.06434)"
              + ("; spectral norm: Miyato et al. 2018 (arXiv:1802.05957)" if spectral_norm else ""),
        image_sizes=SIZES,
        # late: runs trained before these options existed keep their keys while the options stay at default
        options={"width": Option(WIDTH, "channels of D's first and G's last hidden layer; doubled per layer "
                                        "inward", late=True),
                 "spectral_norm": Option(False, "spectral normalisation of D's conv and linear weights "
                                                "(D's BatchNorm is then left out, as in SNGAN)", late=True),
                 "mbstd": Option(0, MBSTD_HELP, late=True)},
        configure=lambda options: dcgan(options["width"], options["spectral_norm"], options["mbstd"]),
    )


@hookimpl
def ganzoo_architectures():
    return [dcgan()]
