"""Conditioning methods: concat (Mirza & Osindero 2014), projection (Miyato & Koyama 2018), acgan (Odena et al.
2017). Each wraps the architecture's own G and D (ganzoo.conditioning), so any architecture whose D returns
(logits, features) takes any of them, under any variant's loss.

Options (``--condition-option key=value``):
  concat:     embed_dim (label embedding joined to z and to D's features, default 32), hidden (width of the layer
              that reads D's features and the embedding together, default 256)
  projection: generator ("auto": conditional BatchNorm where G has BatchNorm, else the embedding on z;
              "batchnorm"; "embedding"), embed_dim (of that embedding, default 32)
  acgan:      weight (of the class cross-entropy terms, default 1), fake_term (D's cross-entropy on generated images
              too, as published; false is StudioGAN's ACGAN-Mod, whose issue #74 explains why), embed_dim (the
              label embedding joined to z, default 32)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganzoo.conditioning import ClassBatchNormGenerator, LabelOnLatent, has_batchnorm
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ConditionSpec, Option, Penalty

EMBED_DIM = 32


def _embed_dim(value: int) -> int:
    if value < 1:
        raise GanzooError(f"condition option embed_dim must be a positive integer, got {value}")
    return value


# ---- discriminators ----


class ConcatDiscriminator(nn.Module):
    """D(x, y) = D's score + v . LeakyReLU(W [h, embed(y)]): the label joined to D's features h, read by one hidden
    layer (joined to the input, it would have to enter every architecture's first layer differently)."""

    def __init__(self, net: nn.Module, feature_dim: int, num_classes: int, embed_dim: int, hidden: int):
        super().__init__()
        self.net = net
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.joint = nn.Sequential(nn.Linear(feature_dim + embed_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        self.where = f"D: a {embed_dim}-dimensional label embedding joined to its features, through a {hidden}-unit layer"

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits, features = self.net(x)[:2]
        joint = torch.cat([features, self.embed(y).to(features.dtype)], dim=1)
        return logits + self.joint(joint).squeeze(1), features


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(h) + <embed(y), h> (Miyato & Koyama 2018): psi(h) is the architecture's own score, h its
    features."""

    def __init__(self, net: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.net = net
        self.embed = nn.Embedding(num_classes, feature_dim)
        nn.init.xavier_uniform_(self.embed.weight)  # as PyTorch-StudioGAN and mimicry initialise it
        self.where = f"D: projection of its {feature_dim} features on a class embedding"

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits, features = self.net(x)[:2]
        return logits + (self.embed(y).to(features.dtype) * features).sum(dim=1), features


class AuxiliaryClassifier(nn.Module):
    """D(x) as the architecture computes it, plus class logits from a linear head on its features (ACGAN). The
    score does not see y: the label acts only through the class cross-entropy terms."""

    def __init__(self, net: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.net = net
        self.classes = nn.Linear(feature_dim, num_classes)
        self.where = f"D: an auxiliary classifier head ({feature_dim} features -> {num_classes} classes)"

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits, features = self.net(x)[:2]
        return logits, features, self.classes(features)


# ---- generators ----


def _generator(mode: str, embed_dim: int):
    def build(build_net, latent_dim: int, num_classes: int) -> nn.Module:
        if mode in ("auto", "batchnorm"):
            net = build_net(latent_dim)
            if has_batchnorm(net):
                return ClassBatchNormGenerator(net, num_classes)
            if mode == "batchnorm":
                raise GanzooError("condition option generator=batchnorm: this architecture's generator has no "
                                  "BatchNorm layer; use generator=embedding (or auto)")
        return LabelOnLatent(build_net, latent_dim, num_classes, embed_dim)

    return build


# ---- ACGAN's class cross-entropy terms ----


def _class_logits(output, side: str) -> torch.Tensor:
    if output.class_logits is None:
        raise GanzooError(f"ACGAN's class term found no class logits on the {side} batch's discriminator output")
    return output.class_logits


def real_class_loss(real, real_labels):
    """D: cross-entropy of the auxiliary head on the real batch against its true classes."""
    return F.cross_entropy(_class_logits(real, "real"), real_labels)


def fake_class_loss(fake, fake_labels):
    """D (published form) and G: cross-entropy of the auxiliary head on the generated batch against the classes it
    was asked for."""
    return F.cross_entropy(_class_logits(fake, "generated"), fake_labels)


# ---- specs ----


def concat(embed_dim: int = EMBED_DIM, hidden: int = 256) -> ConditionSpec:
    _embed_dim(embed_dim)
    if hidden < 1:
        raise GanzooError(f"condition option hidden must be a positive integer, got {hidden}")
    return ConditionSpec(
        name="concat",
        description="a label embedding joined to z in G and to D's features",
        generator=_generator("embedding", embed_dim),
        discriminator=lambda net, width, k: ConcatDiscriminator(net, width, k, embed_dim, hidden),
        paper="Mirza & Osindero 2014, Conditional Generative Adversarial Nets (arXiv:1411.1784)",
        options={"embed_dim": Option(EMBED_DIM, "size of the learned label embedding"),
                 "hidden": Option(256, "units of the layer that reads D's features with the label")},
        configure=lambda o: concat(o["embed_dim"], o["hidden"]),
    )


def projection(generator: str = "auto", embed_dim: int = EMBED_DIM) -> ConditionSpec:
    if generator not in ("auto", "batchnorm", "embedding"):
        raise GanzooError(f"condition option generator must be auto, batchnorm or embedding, got {generator!r}")
    _embed_dim(embed_dim)
    return ConditionSpec(
        name="projection",
        description="D: its score plus <class embedding, D's features>; G: conditional BatchNorm (else the label on z)",
        generator=_generator(generator, embed_dim),
        discriminator=ProjectionDiscriminator,
        paper="Miyato & Koyama 2018, cGANs with Projection Discriminator (arXiv:1802.05637)",
        options={"generator": Option("auto", "how G takes the label: auto (conditional BatchNorm where G has "
                                             "BatchNorm, else the embedding on z), batchnorm, embedding"),
                 "embed_dim": Option(EMBED_DIM, "size of the label embedding joined to z (generator=embedding)")},
        configure=lambda o: projection(o["generator"], o["embed_dim"]),
    )


def acgan(weight: float = 1.0, fake_term: bool = True, embed_dim: int = EMBED_DIM) -> ConditionSpec:
    if weight < 0:
        raise GanzooError(f"condition option weight must be >= 0, got {weight}")
    _embed_dim(embed_dim)
    d_terms = (Penalty("ac_real", real_class_loss, weight),)
    if fake_term:
        d_terms += (Penalty("ac_fake", fake_class_loss, weight),)
    form = ("published: D adds CE(real, y) + CE(fake, y_fake); G adds CE(fake, y_fake)" if fake_term else
            "ACGAN-Mod (StudioGAN): D adds CE(real, y) only; G adds CE(fake, y_fake)")
    return ConditionSpec(
        name="acgan",
        description="an auxiliary classifier head on D's features; class cross-entropy added to D's and G's losses",
        generator=_generator("embedding", embed_dim),
        discriminator=AuxiliaryClassifier,
        discriminator_terms=d_terms,
        generator_terms=(Penalty("ac_g", fake_class_loss, weight),),
        paper="Odena et al. 2017, Conditional Image Synthesis with Auxiliary Classifier GANs (arXiv:1610.09585)",
        options={"weight": Option(1.0, "weight of the class cross-entropy terms in D's and G's losses"),
                 "fake_term": Option(True, "D's class cross-entropy on generated images too (the published form); "
                                           "false: StudioGAN's ACGAN-Mod"),
                 "embed_dim": Option(EMBED_DIM, "size of the label embedding joined to z")},
        configure=lambda o: acgan(o["weight"], o["fake_term"], o["embed_dim"]),
        record={"form": form, "weight": weight},
    )


@hookimpl
def ganzoo_conditionings():
    return [concat(), projection(), acgan()]
