"""The SNGAN ResNet pair (Miyato et al. 2018) for 32x32 and 64x64 images, any channel count.

32x32 follows Table 4 of the paper's appendix (its CIFAR-10 ResNet, after Gulrajani et al. 2017's):
  G: z -> linear 4x4x2w -> 3 up-sampling residual blocks (2w channels) -> BN, ReLU, conv3x3 -> tanh
  D: optimized down block (w) -> down block (w) -> 2 blocks (w) -> ReLU -> global sum pooling -> linear 1
with w = width = 128, the paper's 128 channels in D and 256 in G.
64x64 adds one block to each network and doubles channels per resolution, as in the paper's ImageNet networks
scaled to 64x64 (the layout mimicry ships as SNGAN 64): G 8w, 4w, 2w, w, w/2; D w/2, w, 2w, 4w, 8w.

Blocks: G's residual path is BN, ReLU, nearest 2x upsample, conv3x3, BN, ReLU, conv3x3, and its shortcut a 2x
upsample and a 1x1 conv; D's is ReLU, conv3x3, ReLU, conv3x3, 2x2 average pool, with a 1x1 conv and pooling on
the shortcut wherever the shape changes. D's first ("optimized") block starts with the conv, not a ReLU: the
input image is not an activation. Weights start Xavier-uniform with gain sqrt(2) on the residual convs (they
feed ReLUs) and 1 elsewhere, as the reference Chainer code and mimicry do. Spectral normalisation is on every
D weight by default (option spectral_norm); D has no BatchNorm either way. Option mbstd puts a minibatch
standard deviation layer before D's last block (Karras et al. 2018), whose input then has one more channel.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MBSTD_HELP, MinibatchStdDev
from ganzoo.specs import ArchitectureSpec, ImageShape, Option

SIZES = (32, 64)
WIDTH = 128


def _xavier(conv: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = _xavier(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))
        self.conv2 = _xavier(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2))
        self.shortcut = _xavier(nn.Conv2d(c_in, c_out, 1))  # the shape always changes: learned shortcut

    def forward(self, x):
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool = False):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = _xavier(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))
        self.conv2 = _xavier(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2))
        # identity shortcut only where the shape is unchanged
        self.shortcut = _xavier(nn.Conv2d(c_in, c_out, 1)) if downsample or c_in != c_out else None

    def forward(self, x):
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            # the optimized block pools before its 1x1 conv (cheaper, same function); the others after, as SNGAN
            if self.first:
                s = self.shortcut(F.avg_pool2d(x, 2))
            else:
                s = self.shortcut(x)
                s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


def _channels(size: int, width: int) -> list[int]:
    """Channels from the 4x4 map outwards (G) / from the image inwards, reversed (D)."""
    if size == 32:
        return [width] * 4
    return [width * 8, width * 4, width * 2, width, width // 2]


class ResNetGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: ImageShape, width: int = WIDTH):
        super().__init__()
        # G is twice as wide as D at 32x32 (the paper's 256 vs 128 channels)
        channels = [2 * width] * 4 if shape.size == 32 else _channels(shape.size, width)
        self.start = channels[0]
        self.project = _xavier(nn.Linear(latent_dim, 4 * 4 * self.start))
        self.blocks = nn.Sequential(*[UpBlock(a, b) for a, b in zip(channels, channels[1:])])
        self.bn = nn.BatchNorm2d(channels[-1])
        self.to_image = _xavier(nn.Conv2d(channels[-1], shape.channels, 3, 1, 1))

    def forward(self, z):
        h = self.blocks(self.project(z).view(z.shape[0], self.start, 4, 4))
        return torch.tanh(self.to_image(F.relu(self.bn(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, shape: ImageShape, width: int = WIDTH, spectral_norm: bool = True, mbstd: int = 0):
        super().__init__()
        channels = _channels(shape.size, width)[::-1]
        blocks = [DownBlock(shape.channels, channels[0], downsample=True, first=True)]
        if shape.size == 32:  # Table 4: two down-sampling blocks (32 -> 8), then two at 8x8
            blocks += [DownBlock(width, width, True), DownBlock(width, width, False), DownBlock(width, width, False)]
        else:
            blocks += [DownBlock(a, b, True) for a, b in zip(channels, channels[1:])]
        if mbstd:  # the last block reads one more channel: the group's standard deviation
            last = blocks[-1]
            blocks[-1:] = [MinibatchStdDev(mbstd), DownBlock(last.conv1.in_channels + 1, last.conv2.out_channels,
                                                             last.downsample)]
        self.blocks = nn.Sequential(*blocks)
        self.head = _xavier(nn.Linear(channels[-1], 1))
        if spectral_norm:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    apply_spectral_norm(m)

    def forward(self, x):
        features = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling: (B, channels)
        return self.head(features).squeeze(1), features


def resnet(width: int = WIDTH, spectral_norm: bool = True, mbstd: int = 0) -> ArchitectureSpec:
    if width < 2 or width % 2:
        raise GanzooError(f"architecture option width must be a positive even integer, got {width}")
    if mbstd < 0:
        raise GanzooError(f"architecture option mbstd must be a group size >= 0 (0: off), got {mbstd}")
    return ArchitectureSpec(
        name="resnet",
        description=f"SNGAN ResNet pair (Miyato et al. 2018, appendix Table 4 at 32x32; one more block, "
                    f"channels doubling, at 64x64), width {width}"
                    + (", spectral norm in D" if spectral_norm else ", no spectral norm")
                    + (f", minibatch std (group {mbstd})" if mbstd else ""),
        build_generator=lambda latent_dim, shape: ResNetGenerator(latent_dim, shape, width),
        build_discriminator=lambda shape: ResNetDiscriminator(shape, width, spectral_norm, mbstd),
        paper="Miyato et al. 2018, Spectral Normalization for GANs (arXiv:1802.05957), appendix B.4, Table 4; "
              "Gulrajani et al. 2017 (arXiv:1704.00028)",
        image_sizes=SIZES,
        options={"width": Option(WIDTH, "D's channels at 32x32 (G has twice as many); at 64x64 D widens from "
                                        "width/2 to 8*width and G narrows back"),
                 "spectral_norm": Option(True, "spectral normalisation of every D weight"),
                 "mbstd": Option(0, MBSTD_HELP, late=True)},
        configure=lambda options: resnet(options["width"], options["spectral_norm"], options["mbstd"]),
    )


@hookimpl
def ganzoo_architectures():
    return [resnet()]
