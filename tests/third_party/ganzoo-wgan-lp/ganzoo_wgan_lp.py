"""WGAN-LP (Petzka, Fischer & Lukovnicov 2018) as a third-party ganzoo plugin: the Wasserstein critic with a
one-sided penalty lambda * max(0, ||grad D(x^)|| - 1)^2, which only pushes gradients down where they exceed 1."""
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.penalties import gradient_norms, interpolates
from ganzoo.specs import Option, Penalty, Recipe, VariantSpec


def critic_loss(real, fake):  # E[D(G(z))] - E[D(x)]
    return fake.logits.mean() - real.logits.mean()


def generator_loss(fake, real=None):  # -E[D(G(z))]
    return -fake.logits.mean()


def lipschitz_penalty(discriminate, real_images, fake_images, rng):
    """The penalty receives only the step arguments it names: here D, both batches and the run's RNG."""
    norms = gradient_norms(discriminate, interpolates(real_images, fake_images, rng))
    return (norms - 1).clamp(min=0).pow(2).mean()


def wgan_lp(weight: float = 10.0) -> VariantSpec:
    if weight < 0:
        raise GanzooError(f"variant option lambda must be >= 0, got {weight}")
    return VariantSpec(
        name="wgan-lp",
        description=f"Wasserstein critic + {weight:g} max(0, ||grad D(x^)|| - 1)^2 (one-sided penalty)",
        discriminator_loss=critic_loss,
        generator_loss=generator_loss,
        d_value=lambda scores: scores,  # log raw critic scores
        equilibrium=None,  # and plot them without the 0.5 line of probabilities
        penalties=(Penalty("lipschitz_penalty", lipschitz_penalty, weight=weight),),
        recipe=Recipe(d_steps=5, optimizer="adam", lr=1e-4, betas=(0.0, 0.9)),
        options={"lambda": Option(10.0, "weight of the Lipschitz penalty")},
        configure=lambda options: wgan_lp(options["lambda"]),
        paper="Petzka, Fischer & Lukovnicov 2018, On the regularization of Wasserstein GANs (arXiv:1709.08894)",
    )


@hookimpl
def ganzoo_variants():
    return [wgan_lp()]
