"""Variants beyond loss pairs: penalties against closed forms, recipes, options, hooks, lazy steps, resume."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import ganzoo
from ganzoo import checkpoint, registry
from ganzoo.hookspecs import hookimpl
from ganzoo.penalties import gradient_norms
from ganzoo.specs import DiscriminatorOutput, Option, Penalty, Recipe, VariantSpec
from ganzoo_plugins import dragan as dragan_plugin
from ganzoo_plugins import r1 as r1_plugin
from ganzoo_plugins import wgan as wgan_plugin

from conftest import assert_same_checkpoints, killed_and_resumed
from ganzoo_plugins import wgan_gp as wgan_gp_plugin
from ganzoo_wgan_lp import lipschitz_penalty

torch.manual_seed(0)
REAL = torch.randn(6, 1, 4, 4)
FAKE = torch.randn(6, 1, 4, 4)


def linear_critic(w: torch.Tensor):
    """D(x) = <w, x>: its input gradient is w at every point, so ||grad D|| = ||w|| whatever the sample."""
    return lambda x: DiscriminatorOutput((x.flatten(1) * w.flatten()).sum(1), x.flatten(1))


def quadratic_critic(c: float):
    """D(x) = c/2 ||x||^2: the gradient at x_i is c x_i, a different norm for every sample."""
    return lambda x: DiscriminatorOutput(0.5 * c * x.flatten(1).pow(2).sum(1), x.flatten(1))


def rng():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_two_sided_penalties_match_a_linear_critic(scale):
    w = torch.randn(1, 4, 4)
    w = w / w.norm() * scale  # ||w|| = scale
    expected = (scale - 1) ** 2
    d = linear_critic(w)
    assert wgan_gp_plugin.gradient_penalty(d, REAL, FAKE, rng()).item() == pytest.approx(expected, abs=1e-6)
    assert dragan_plugin.dragan_penalty(d, REAL, rng()).item() == pytest.approx(expected, abs=1e-6)
    one_sided = max(scale - 1, 0) ** 2  # the third-party example penalises only gradients above 1
    assert lipschitz_penalty(d, REAL, FAKE, rng()).item() == pytest.approx(one_sided, abs=1e-6)


def test_gradient_norm_is_per_sample_over_the_whole_image():
    """The known bug elsewhere: a norm over the wrong dimension. Per sample, over channels and pixels, it is c ||x_i||."""
    x = torch.randn(5, 3, 4, 4)
    norms = gradient_norms(quadratic_critic(2.0), x)
    assert norms.shape == (5,)
    torch.testing.assert_close(norms, 2.0 * x.flatten(1).norm(dim=1))
    # R1 on the same critic: E||grad D(x)||^2 = c^2 E||x||^2 (before its gamma/2 weight)
    assert r1_plugin.r1_penalty(quadratic_critic(2.0), x).item() == pytest.approx(
        4.0 * x.flatten(1).pow(2).sum(1).mean().item(), rel=1e-5)


def test_penalty_gradient_reaches_the_critic_weights():
    """The penalty keeps its graph: its gradient with respect to D's weights is that of (||w|| - 1)^2."""
    w = (torch.randn(1, 4, 4) * 0.3).requires_grad_(True)
    penalty = wgan_gp_plugin.gradient_penalty(linear_critic(w), REAL, FAKE, rng())
    (grad,) = torch.autograd.grad(penalty, w)
    norm = w.detach().norm()
    torch.testing.assert_close(grad, 2 * (norm - 1) * w.detach() / norm)


# ---- the loop: penalties in the objective, one backward, hooks, lazy steps ------------------------------------

def probe_variant(calls: list, every: int = 1, weight: float = 3.0, value: float = 0.25):
    """Losses and penalty with known values; each penalty call records the step arguments it received."""

    def penalty(discriminator, d_step, real_images, fake_images):
        calls.append((d_step, real_images.shape, fake_images.requires_grad))
        return value + 0.0 * next(discriminator.parameters()).sum()  # an exact value, with no gradient

    return VariantSpec(name="probe", description="probe", paper="-",
                       discriminator_loss=lambda real, fake: 0.0 * (real.logits.mean() + fake.logits.mean()),
                       generator_loss=lambda fake, real=None: -fake.logits.mean(),
                       penalties=(Penalty("probe_term", penalty, weight=weight, every=every),),
                       equilibrium=None)


def register_variant(register_plugin, spec, name):
    class Plugin:
        @hookimpl
        def ganzoo_variants(self):
            return [spec]

    register_plugin(Plugin(), name)


def test_lazy_penalty_applies_on_exactly_its_steps_scaled_by_k(tmp_path, register_plugin):
    calls = []
    register_variant(register_plugin, probe_variant(calls, every=3), "probe-plugin")
    run = ganzoo.train(variant="probe", steps=8, d_steps=2, batch_size=16, out=tmp_path / "r", progress=False)
    # d_steps 2: generator step s runs critic steps 2s and 2s+1; every=3 applies it on d_step 0, 3, 6, 9, 12, 15
    assert [c[0] for c in calls] == [0, 3, 6, 9, 12, 15]
    assert all(shape == (16, 1, 28, 28) and not needs_grad for _, shape, needs_grad in calls)
    log = run.read_log()
    # the log shows the last critic step of each generator step (d_step 2s+1): applied at s = 1, 4, 7
    applied = log["probe_term"].notna().to_numpy()
    assert log.loc[applied, "step"].tolist() == [2, 5, 8]
    assert np.allclose(log.loc[applied, "probe_term"], 0.25)
    # d_loss is the whole objective: 0 + weight * every * value where applied, 0 elsewhere
    assert np.allclose(log.loc[applied, "d_loss"], 3.0 * 3 * 0.25)
    assert np.allclose(log.loc[~applied, "d_loss"], 0.0)


def test_penalty_is_part_of_the_discriminator_objective(tmp_path, register_plugin):
    """D's own loss has no gradient here: D's weights change only because the penalty is in the backward pass."""

    def run_with(weight, name):
        def penalty(discriminator):
            return sum(p.pow(2).sum() for p in discriminator.parameters())

        spec = VariantSpec(name=name, description="x", paper="-",
                           discriminator_loss=lambda real, fake: 0.0 * (real.logits.mean() + fake.logits.mean()),
                           generator_loss=lambda fake, real=None: -fake.logits.mean(),
                           penalties=(Penalty("l2", penalty, weight=weight),))
        register_variant(register_plugin, spec, name + "-plugin")
        return ganzoo.train(variant=name, steps=1, batch_size=16, out=tmp_path / name, progress=False)

    torch.manual_seed(0)  # as training builds them: G first, then D, from the run's seed
    shape, mlp = registry.dataset("mnist5k").shape, registry.architecture("mlp")
    mlp.build_generator(100, shape)
    initial = mlp.build_discriminator(shape).state_dict()
    without = torch.load(run_with(0.0, "l2-off").checkpoint, weights_only=True)["discriminator"]
    with_penalty = torch.load(run_with(1.0, "l2-on").checkpoint, weights_only=True)["discriminator"]
    key = next(iter(initial))
    assert torch.equal(without[key], initial[key])  # zero gradient: Adam does not move
    assert not torch.equal(with_penalty[key], initial[key])


def test_one_backward_pass_per_discriminator_step(tmp_path, monkeypatch):
    calls = []
    real_backward = torch.Tensor.backward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real_backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", counting)
    ganzoo.train(variant="wgan-gp", steps=3, batch_size=16, out=tmp_path / "r", progress=False)
    assert len(calls) == 3 * (5 + 1)  # five critic steps (loss and penalty together) and one generator step


def test_weight_clipping_holds_after_every_critic_step(tmp_path, monkeypatch):
    seen = []
    real_clip = wgan_plugin.clip_weights

    def clip_and_check(discriminator, clip=0.01):
        real_clip(discriminator, clip)
        seen.append(max(p.abs().max().item() for p in discriminator.parameters()))

    monkeypatch.setattr(wgan_plugin, "clip_weights", clip_and_check)
    run = ganzoo.train(variant="wgan", steps=4, batch_size=16, out=tmp_path / "r", progress=False,
                       variant_options={"clip": 0.02})
    assert len(seen) == 4 * 5 and max(seen) <= 0.02
    weights = torch.load(run.checkpoint, weights_only=True)["discriminator"]
    assert max(w.abs().max().item() for w in weights.values() if w.is_floating_point()) <= 0.02


# ---- recipes and options ---------------------------------------------------------------------------------

def test_variant_recipe_is_used_and_recorded_unless_overridden(tmp_path, cli):
    run = ganzoo.train(variant="wgan", steps=2, batch_size=16, out=tmp_path / "wgan", progress=False)
    c = run.config
    assert (c.d_steps, c.optimizer, c.lr, c.betas) == (5, "rmsprop", 5e-5, None)
    state = torch.load(run.checkpoint, weights_only=True)
    assert "square_avg" in next(iter(state["opt_d"]["state"].values()))  # RMSprop's state, not Adam's
    stored = json.loads((run.path / "config.json").read_text())
    assert stored["config"]["optimizer"] == "rmsprop" and stored["resolved"]["variant"]["recipe"]["lr"] == 5e-5

    code, out, err = cli("train", "--variant", "wgan-gp", "--steps", "2", "--batch-size", "16", "--lr", "3e-4",
                         "--out", tmp_path / "gp", "--quiet")
    assert code == 0, err
    c = ganzoo.open_run(tmp_path / "gp").config
    assert (c.d_steps, c.optimizer, c.lr, c.betas) == (5, "adam", 3e-4, (0.0, 0.9))  # only lr overridden
    assert "recipe: 5 critic steps, adam lr 0.0003 betas (0, 0.9), lambda=10" in out
    # Adam asked for on a variant whose recipe is RMSprop: the reference betas, not none
    c = ganzoo.train(variant="wgan", optimizer="adam", steps=1, batch_size=16, out=tmp_path / "wa",
                     progress=False).config
    assert (c.optimizer, c.betas, c.lr, c.d_steps) == ("adam", (0.5, 0.999), 5e-5, 5)


def test_options_are_typed_validated_and_part_of_the_identity(tmp_path):
    a = ganzoo.train(variant="r1", steps=2, batch_size=16, out=tmp_path / "a", progress=False,
                     variant_options={"gamma": "1"})
    assert a.config.variant_options == {"every": 1, "gamma": 1.0}
    same = ganzoo.train(variant="r1", steps=2, batch_size=16, out=tmp_path / "a", progress=False,
                        variant_options={"gamma": 1.0})  # the same run, however the value was typed
    assert same.config.key() == a.config.key() and same.stats["wall_time_s"] == a.stats["wall_time_s"]
    other = ganzoo.train(variant="r1", steps=2, batch_size=16, out=tmp_path / "b", progress=False)
    assert other.config.key() != a.config.key()
    with pytest.raises(ganzoo.GanzooError, match=r"already holds a different run \(variant_options="):
        ganzoo.train(variant="r1", steps=2, batch_size=16, out=tmp_path / "a", progress=False)
    # the configured variant carries the option into its penalty
    assert registry.variant("r1", {"gamma": "4", "every": "16"}).penalties[0] == Penalty(
        "r1", r1_plugin.r1_penalty, weight=2.0, every=16)


@pytest.mark.parametrize("argv, message", [
    (["--variant", "r1", "--variant-option", "gama=1"],
     "variant 'r1' has no option gama; its options: gamma (default 10.0), every (default 1)"),
    (["--variant", "r1", "--variant-option", "gamma=lots"], "variant 'r1' option gamma must be a number, got 'lots'"),
    (["--variant", "r1", "--variant-option", "every=2.5"], "variant 'r1' option every must be an integer"),
    (["--variant", "r1", "--variant-option", "every=0"], "every must be a positive integer, got 0"),
    (["--variant", "wgan-gp", "--variant-option", "lambda=-1"], "variant option lambda must be >= 0, got -1.0"),
    (["--variant", "r1", "--variant-option", "gamma"], "--variant-option expects KEY=VALUE, got 'gamma'"),
    (["--variant", "vanilla", "--variant-option", "gamma=1"], "variant 'vanilla' takes no options, got gamma"),
    (["--variant", "wgan", "--betas", "0.5", "0.9"], "betas are Adam's; optimizer rmsprop takes none"),
    (["--optimizer", "sgd"], "optimizer must be one of adam, rmsprop; got 'sgd'"),
    (["--d-steps", "0"], "d-steps must be a positive integer, got 0"),
])
def test_bad_variant_options_and_recipe_fields_are_one_line_errors(tmp_path, cli, argv, message):
    code, _, err = cli("train", "--steps", "1", "--out", tmp_path / "r", "--quiet", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_malformed_variant_pieces_are_reported_by_name(register_plugin, capsys):
    bad = [
        VariantSpec(name="bad-arg", description="x", discriminator_loss=abs, generator_loss=abs,
                    penalties=(Penalty("p", lambda discriminator, images: 0),)),
        VariantSpec(name="bad-column", description="x", discriminator_loss=abs, generator_loss=abs,
                    penalties=(Penalty("d_loss", lambda real_images: 0),)),
        VariantSpec(name="bad-recipe", description="x", discriminator_loss=abs, generator_loss=abs,
                    recipe=Recipe(d_steps="5")),
        VariantSpec(name="bad-option", description="x", discriminator_loss=abs, generator_loss=abs,
                    options={"gamma": 10.0}, configure=lambda o: None),
    ]
    for spec in bad:
        register_variant(register_plugin, spec, f"{spec.name}-plugin")
    names = registry.entries("variant")
    assert "vanilla" in names and not any(spec.name in names for spec in bad)
    err = capsys.readouterr().err
    assert "penalty p asks for images; it may declare any of discriminate, discriminator" in err
    assert "penalty name 'd_loss' must be a new log column name" in err
    assert "'bad-recipe'.recipe: d-steps must be a positive integer, got '5'" in err
    assert "'bad-option'.options must map option names to ganzoo.specs.Option" in err


def test_penalty_that_returns_no_scalar_fails_the_run_in_one_line(tmp_path, register_plugin, cli):
    spec = VariantSpec(name="vector-penalty", description="x", paper="-",
                       discriminator_loss=lambda real, fake: fake.logits.mean() - real.logits.mean(),
                       generator_loss=lambda fake, real=None: -fake.logits.mean(),
                       penalties=(Penalty("per_sample", lambda real: real.logits),))
    register_variant(register_plugin, spec, "vector-plugin")
    code, _, err = cli("train", "--variant", "vector-penalty", "--steps", "3", "--batch-size", "16",
                       "--out", tmp_path / "r", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "variant 'vector-penalty' penalty 'per_sample' must return a scalar tensor, got (16,)" in err
    run = ganzoo.open_run(tmp_path / "r")
    assert run.status == "failed" and "must return a scalar tensor" in run.stats["error"]


def test_variant_whose_loss_raises_mid_run_is_marked_failed(tmp_path, register_plugin, cli):
    def loss(fake, real=None):
        raise ValueError("loss bug")

    spec = VariantSpec(name="raises", description="x", paper="-", generator_loss=loss,
                       discriminator_loss=lambda real, fake: fake.logits.mean() - real.logits.mean())
    register_variant(register_plugin, spec, "raises-plugin")
    code, _, err = cli("train", "--variant", "raises", "--steps", "3", "--batch-size", "16",
                       "--out", tmp_path / "r", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "training failed at step 1: ValueError: loss bug (at test_variants.py:" in err
    run = ganzoo.open_run(tmp_path / "r")
    assert run.status == "failed" and run.stats["error"].startswith("step 1: ValueError: loss bug (at ")


# ---- resume ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["wgan", "wgan-gp", "r1", "dragan"])
def test_new_variants_resume_bit_identically(tmp_path, monkeypatch, variant):
    """RMSprop's state, clipped weights and the RNG the penalties draw from all come back from the checkpoint."""
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, variant=variant, steps=6, checkpoint_every=3,
                                           batch_size=16, variant_options={"every": 2} if variant == "r1" else {})
    assert resumed.stats["steps_this_session"] == 3
    assert_same_checkpoints(straight, resumed)


# ---- bench -------------------------------------------------------------------------------------------------

def test_bench_takes_variant_options_and_shows_each_rows_recipe(tmp_path, cli):
    config = tmp_path / "r1.toml"
    config.write_text("""
[bench]
variants = ["r1", "wgan"]
seeds = [0]
steps = 20
eval_every = 0
n_fake = 200

[train]
batch_size = 16

[variant_options.r1]
gamma = 1
""")
    code, out, err = cli("bench", "--config", config, "--variant-option", "r1.every=2", "--out", tmp_path / "b",
                         "--quiet", "--format", "md")
    assert code == 0, err
    board = ganzoo.leaderboard(tmp_path / "b").set_index("variant")
    assert board.loc["r1", "recipe"] == "1 D step, adam lr 0.0002 betas (0.5, 0.999), every=2, gamma=1"
    assert board.loc["wgan", "recipe"] == "5 critic steps, rmsprop lr 5e-05, clip=0.01"
    header = out.splitlines()[0]  # the Markdown table: the fields that differ between rows are columns
    assert all(f"| {name} " in header for name in ("D steps", "optimizer", "lr", "wgan.clip", "r1.every", "r1.gamma"))
    csv = pd.read_csv(tmp_path / "b" / "leaderboard.csv", comment="#").set_index("variant")
    assert csv.loc["r1", "recipe"] == board.loc["r1", "recipe"]
    run = ganzoo.open_run(next((tmp_path / "b" / "runs").glob("r1-*")))
    assert run.config.variant_options == {"every": 2, "gamma": 1.0}


@pytest.mark.parametrize("argv, message", [
    (["--variants", "vanilla", "--variant-option", "wgan.clip=0.1"],
     "variant_options for wgan, which this benchmark does not train"),
    (["--variants", "r1", "--variant-option", "r1.gamma=-2"], "variant option gamma must be >= 0, got -2.0"),
    (["--variants", "r1", "--variant-option", "gamma=2"], "--variant-option expects VARIANT.KEY=VALUE"),
])
def test_bench_refuses_bad_variant_options_before_writing_anything(tmp_path, cli, argv, message):
    code, _, err = cli("bench", *argv, "--out", tmp_path / "b", "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


def test_bench_takes_architecture_options_per_architecture(tmp_path):
    from ganzoo.bench import BenchSpec

    config = tmp_path / "arch.toml"
    config.write_text('[bench]\narchs = ["mlp", "dcgan"]\n[arch_options.dcgan]\nwidth = 16\nspectral_norm = true\n')
    spec = BenchSpec.from_toml(config)
    dcgan = spec.train_config("vanilla", "dcgan", "mnist5k", 0)
    assert dcgan.arch_options["width"] == 16 and dcgan.arch_options["spectral_norm"] is True
    assert spec.train_config("vanilla", "mlp", "mnist5k", 0).arch_options == {}
    assert dcgan.key() != BenchSpec().train_config("vanilla", "dcgan", "mnist5k", 0).key()
    config.write_text('[bench]\narchs = ["mlp"]\n[arch_options.dcgan]\nwidth = 16\n')
    with pytest.raises(ganzoo.GanzooError, match="arch_options for dcgan, which is not one of the benchmark's"):
        BenchSpec.from_toml(config)
