"""Wasserstein GAN with weight clipping (Arjovsky, Chintala & Bottou 2017): a critic kept roughly Lipschitz by
clamping every weight to [-c, c] after each critic step; RMSprop 5e-5 and 5 critic steps, as in the paper."""
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import Option, Recipe, VariantSpec
from ganzoo_plugins.lsgan import raw_score


def critic_loss(real, fake):
    """E[D(G(z))] - E[D(x)]: the critic maximises the gap, an estimate of the Wasserstein-1 distance."""
    return fake.logits.mean() - real.logits.mean()


def critic_generator_loss(fake, real=None):
    """-E[D(G(z))]."""
    return -fake.logits.mean()


def clip_weights(discriminator, clip: float = 0.01):
    for weight in discriminator.parameters():
        weight.clamp_(-clip, clip)


def checked(name: str, value, ok: bool, rule: str):
    """An option's value, or the one-line error naming the rule it breaks (shared by the built-in variants)."""
    if not ok:
        raise GanzooError(f"variant option {name} must be {rule}, got {value}")
    return value


def wgan(clip: float = 0.01) -> VariantSpec:
    return VariantSpec(
        name="wgan",
        description=f"Wasserstein critic E[D(G(z))] - E[D(x)], weights clipped to [-{clip:g}, {clip:g}]",
        discriminator_loss=critic_loss,
        generator_loss=critic_generator_loss,
        d_value=raw_score,
        equilibrium=None,
        after_discriminator_step=lambda discriminator: clip_weights(discriminator, clip),
        recipe=Recipe(d_steps=5, optimizer="rmsprop", lr=5e-5, betas=None),
        options={"clip": Option(0.01, "weights are clamped to [-clip, clip] after every critic step")},
        configure=lambda o: wgan(checked("clip", o["clip"], o["clip"] > 0, "positive")),
        paper="Arjovsky, Chintala & Bottou 2017, Wasserstein GAN (arXiv:1701.07875)",
    )


@hookimpl
def ganzoo_variants():
    return [wgan()]
