"""Mode collapse: the 2-D mixtures and Stacked MNIST with their metrics against hand computations, and the remedies
(packing, unrolling, minibatch standard deviation) against what they must and must not change."""
import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import ganzoo
from ganzoo import checkpoint, registry
from ganzoo.config import TrainConfig
from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.layers import MinibatchStdDev
from ganzoo.specs import ImageShape, VariantSpec, VectorShape
from ganzoo.steps import Discriminate, pack
from ganzoo.training import resolve
from ganzoo.unrolling import lookahead
from ganzoo_plugins.mixtures import grid_means, ring_means
from ganzoo_plugins.mlp import MLPDiscriminator
from ganzoo_plugins.mode_metrics import mixture_scores, stacked_modes
from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

from conftest import assert_same_checkpoints, killed_and_resumed

RING = dict(dataset="ring", arch="pacgan-mlp", latent_dim=2, batch_size=20, dataset_options={"train_size": 2000})


def weights(run) -> dict:
    return torch.load(run.checkpoint, weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("generator", "discriminator") for k in a[part])


# ---- the datasets, as the PacGAN code defines them ----------------------------------------------------------------

def test_ring_and_grid_are_the_published_mixtures():
    ring = registry.dataset("ring")
    means = np.array(ring.metadata["mixture"]["means"])
    assert means.shape == (8, 2) and ring.metadata["mixture"]["std"] == 0.01
    for i, (x, y) in enumerate(means):  # (cos 2 pi i/8, sin 2 pi i/8): 8 distinct modes on the unit circle
        assert x == pytest.approx(math.cos(2 * math.pi * i / 8)) and y == pytest.approx(math.sin(2 * math.pi * i / 8))
    assert len({(round(x, 6), round(y, 6)) for x, y in means}) == 8
    grid = registry.dataset("grid")
    assert sorted(map(tuple, np.array(grid.metadata["mixture"]["means"]))) == \
        sorted((x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4))
    assert grid.metadata["mixture"]["std"] == 0.05
    data = load_split("ring", "train")
    assert data.images.shape == (100_000, 2) and data.images.dtype == torch.float32
    counts = np.bincount(data.labels.numpy(), minlength=8)
    assert abs(counts - 12_500).max() < 500  # equal weights (the binomial sd is 105)
    offsets = data.images.numpy() - means[data.labels.numpy()]
    assert offsets.std(axis=0) == pytest.approx([0.01, 0.01], rel=0.02) and abs(offsets.mean()) < 2e-4
    assert not torch.equal(load_split("ring", "test").images, data.images)  # an independent reference set


def test_mixture_options_change_the_mixture_and_are_checked(cli):
    spec = registry.dataset("ring", {"modes": 4, "radius": 2.0, "std": 0.1, "train_size": 500})
    assert np.allclose(spec.metadata["mixture"]["means"], ring_means(4, 2.0))
    assert len(load_split("ring", "train", options={"modes": 4, "train_size": 500}).images) == 500
    assert np.allclose(grid_means(3, 1.0), [[x, y] for x in (-1, 0, 1) for y in (-1, 0, 1)])
    code, _, err = cli("train", "--dataset", "ring", "--dataset-option", "std=0", "--quiet")
    assert code == 2 and "std must be positive" in err and len(err.strip().splitlines()) == 1


# ---- the mixture metric against hand computations ------------------------------------------------------------

def test_mixture_metric_on_constructed_points():
    means = torch.tensor(ring_means(8, 1.0))
    on_one_mode = means[3].repeat(2500, 1) + 0.001 * torch.randn(2500, 2)
    scores = mixture_scores(on_one_mode, means, 0.01)
    assert scores["modes"] == 1 and scores["high_quality"] == 100.0
    assert scores["reverse_kl"] == pytest.approx(math.log(8))
    far = means.repeat(313, 1)[:2500] + torch.tensor([0.04, 0.0])  # 4 std from a mode: none of high quality
    assert mixture_scores(far, means, 0.01)["high_quality"] == 0.0
    assert math.isnan(mixture_scores(far, means, 0.01)["reverse_kl"])  # no high-quality point: undefined
    two = torch.cat([means[0].repeat(750, 1), means[1].repeat(250, 1)])  # 3:1 over two modes
    expected = 0.75 * math.log(0.75 * 8) + 0.25 * math.log(0.25 * 8)
    assert mixture_scores(two, means, 0.01)["reverse_kl"] == pytest.approx(expected)


@pytest.mark.parametrize("dataset, modes", [("ring", 8), ("grid", 25)])
def test_samples_of_the_true_mixture_capture_every_mode(dataset, modes):
    """The share of a 2-D standard normal within radius 3 is 1 - e^-4.5 = 98.89%."""
    result = ganzoo.evaluation.evaluate_images(load_split(dataset, "test").images[:20_000], dataset, progress=False,
                                               metric_options={"mixture-modes": {"samples": 20_000}})
    assert result.metrics["modes"] == modes
    assert result.metrics["high_quality"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.25)
    assert result.metrics["reverse_kl"] < 0.01
    assert result.protocol["mixture_modes.samples"] == 20_000 and result.rank_by == "reverse_kl"


# ---- Stacked MNIST ---------------------------------------------------------------------------------------------

def test_stacked_mnist_channels_are_real_digits_with_recoverable_labels():
    options = {"train_size": 300, "test_size": 200}
    data = load_split("stacked-mnist", "train", options=options)
    digits = load_split("mnist5k", "train")
    assert data.images.shape == (300, 3, 28, 28) and data.images.dtype == torch.uint8
    flat = digits.images[:, 0].reshape(len(digits.images), -1)
    for i in range(0, 300, 37):
        triple = [int(data.labels[i]) // 100, int(data.labels[i]) // 10 % 10, int(data.labels[i]) % 10]
        for k in range(3):  # channel k is one real digit, and its label is the k-th digit of the triple
            match = (flat == data.images[i, k].reshape(1, -1)).all(dim=1).nonzero().flatten()
            assert len(match) >= 1 and int(digits.labels[match[0]]) == triple[k]
    again = load_split("stacked-mnist", "train", options=options)
    assert torch.equal(again.images, data.images)  # fixed and seeded
    assert registry.dataset("stacked-mnist").num_classes == 1000


def test_stacked_modes_on_constructed_digits():
    same = torch.tensor([[3, 1, 4]] * 500)
    assert stacked_modes(same) == {"stacked_modes": 1, "stacked_kl": pytest.approx(math.log(1000))}
    everything = torch.tensor([[a, b, c] for a in range(10) for b in range(10) for c in range(10)] * 3)
    scores = stacked_modes(everything)
    assert scores["stacked_modes"] == 1000 and scores["stacked_kl"] == pytest.approx(0.0, abs=1e-12)


def test_stacked_metric_classifies_each_channel_with_mnists_classifier(reference_classifier):
    options = {"train_size": 400, "test_size": 1200}
    real = load_split("stacked-mnist", "test", options=options)
    result = ganzoo.evaluation.evaluate_images(real.images, "stacked-mnist", dataset_options=options, progress=False,
                                               metric_options={"stacked-modes": {"samples": 1200}})
    # 1,200 real images from 1,000 equally likely triples: about 1000 (1 - e^-1.2) = 699 distinct ones, less the
    # classifier's few mistakes
    assert 600 < result.metrics["stacked_modes"] < 760
    assert result.protocol["stacked_modes.classifier"] == "mnist5k"
    assert result.protocol["stacked_modes.classifier_sha256"] == reference_classifier.weights_sha256


# ---- packing ------------------------------------------------------------------------------------------------------

def test_pack_concatenates_consecutive_samples_along_channels_or_features():
    images = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    packed = pack(images, 2)
    assert packed.shape == (2, 4, 3, 3)
    assert torch.equal(packed[1], torch.cat([images[2], images[3]]))
    vectors = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(pack(vectors, 3), torch.tensor([[0., 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]))
    assert pack(vectors, 1) is vectors


def test_packed_discriminator_judges_m_independent_samples(tmp_path, monkeypatch):
    seen = []
    real_forward = MLPDiscriminator.forward

    def recording(self, x):
        seen.append(x.detach().clone())
        return real_forward(self, x)

    monkeypatch.setattr(MLPDiscriminator, "forward", recording)
    run = ganzoo.train(variant="vanilla", steps=2, batch_size=4, pack=3, out=tmp_path / "r", progress=False)
    assert run.status == "completed"
    d = weights(run)["discriminator"]
    assert d["body.1.weight"].shape == (512, 3 * 784)  # only D's input layer changes: m times the features
    real, fake = seen[0], seen[1]  # one D step: 4 packs of 3 real, 4 packs of 3 generated samples
    assert real.shape == fake.shape == (4, 3, 28, 28)
    for batch in (real, fake):  # 12 different samples: no sample repeated within or across packs
        assert len({tuple(c.tolist()) for c in batch.reshape(12, -1)}) == 12
    train = load_split("mnist5k", "train").images.float().div(127.5).sub(1).reshape(4000, -1)
    first = real.reshape(12, -1)[:3]
    assert all((train == sample).all(dim=1).any() for sample in first)  # each a real training digit
    assert json.loads((run.path / "config.json").read_text())["config"]["pack"] == 3


def test_no_packing_and_no_unrolling_keep_runs_and_their_keys():
    """Keys of runs made before packing and unrolling existed (written down then) name the same runs now."""
    assert resolve(TrainConfig()).key() == "eaf969a0ecb0"
    assert resolve(TrainConfig(arch="dcgan", batch_size=32, steps=12, seed=3)).key() == "7d2e35c37330"
    assert resolve(TrainConfig(variant="wgan-gp", ema=0.999)).key() == "6556e8aa92cd"
    assert resolve(TrainConfig(pack=1, unroll=0)).key() == "eaf969a0ecb0"
    assert resolve(TrainConfig(pack=2)).key() != "eaf969a0ecb0" != resolve(TrainConfig(unroll=1)).key()
    assert resolve(TrainConfig(arch_options={"mbstd": 0})).key() == "eaf969a0ecb0"


def test_explicit_pack_1_and_unroll_0_train_bit_identically(tmp_path):
    plain = ganzoo.train(variant="r1", steps=4, batch_size=16, out=tmp_path / "a", progress=False)
    explicit = ganzoo.train(variant="r1", steps=4, batch_size=16, pack=1, unroll=0, out=tmp_path / "b",
                            progress=False)
    assert same_weights(weights(plain), weights(explicit))


# ---- unrolling ----------------------------------------------------------------------------------------------------

def _d_and_optimizer(kind: str):
    torch.manual_seed(0)
    D = MLPDiscriminator(VectorShape(2))
    opt = (torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.5, 0.999)) if kind == "adam"
           else torch.optim.RMSprop(D.parameters(), lr=1e-2))
    real = torch.randn(16, 2)
    opt.zero_grad()
    bce_discriminator_loss(Discriminate(D)(real), Discriminate(D)(torch.randn(16, 2))).backward()
    opt.step()  # some optimizer state to start the look-ahead from
    return D, opt, real


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_lookahead_steps_are_the_optimizers_steps(kind):
    D, opt, real = _d_and_optimizer(kind)
    fake = torch.randn(16, 2) + 1

    def objective(judge):
        return bce_discriminator_loss(judge(real), judge(fake))

    ahead = lookahead(Discriminate(D), opt, objective, 3)
    trained, trained_opt = copy.deepcopy(D), copy.deepcopy(opt)
    trained_opt.param_groups[0]["params"] = list(trained.parameters())
    trained_opt.state = {q: copy.deepcopy(opt.state[p]) for p, q in zip(D.parameters(), trained.parameters())}
    for _ in range(3):
        trained_opt.zero_grad()
        objective(Discriminate(trained)).backward()
        trained_opt.step()
    for name, p in trained.named_parameters():
        assert torch.allclose(ahead.weights[name], p, atol=1e-6), name
    for name, p in D.named_parameters():  # the copy moved, D did not
        assert not torch.allclose(ahead.weights[name], p)


def test_unrolled_gradient_flows_through_the_lookahead_steps():
    D, opt, real = _d_and_optimizer("adam")
    D.requires_grad_(False)  # as in the generator step
    torch.manual_seed(1)
    G = torch.nn.Linear(2, 2)
    z = torch.randn(16, 2)

    def generator_gradient(differentiable: bool) -> torch.Tensor:
        G.zero_grad()
        fake = G(z)
        ahead = lookahead(Discriminate(D), opt, lambda judge: bce_discriminator_loss(judge(real), judge(fake)), 5,
                          differentiable=differentiable)
        non_saturating_generator_loss(ahead(fake)).backward()
        return G.weight.grad.clone()

    through, around = generator_gradient(True), generator_gradient(False)
    assert not torch.allclose(through, around, rtol=1e-3)  # the look-ahead term changes G's gradient
    # without it, the gradient is the one against the k-step-trained copy, held fixed
    ahead = lookahead(Discriminate(D), opt, lambda judge: bce_discriminator_loss(judge(real), judge(G(z).detach())), 5)
    fixed = {k: v.detach() for k, v in ahead.weights.items()}
    G.zero_grad()
    non_saturating_generator_loss(Discriminate(D).using(fixed)(G(z))).backward()
    assert torch.allclose(G.weight.grad, around, atol=1e-6)


def test_unrolling_leaves_the_discriminators_own_update_alone(tmp_path):
    """After one step D is the same with and without unrolling (its buffers too: BatchNorm, spectral norm); G is not."""
    settings = dict(variant="vanilla", arch="dcgan", steps=1, batch_size=8, progress=False)
    plain = weights(ganzoo.train(out=tmp_path / "a", **settings))
    unrolled = weights(ganzoo.train(out=tmp_path / "b", unroll=3, **settings))
    for key, value in plain["discriminator"].items():
        assert torch.equal(value, unrolled["discriminator"][key]), key
    assert not all(torch.equal(v, unrolled["generator"][k]) for k, v in plain["generator"].items())
    sn = dict(settings, arch_options={"spectral_norm": True})
    plain = weights(ganzoo.train(out=tmp_path / "c", **sn))
    unrolled = weights(ganzoo.train(out=tmp_path / "d", unroll=2, **sn))
    for key, value in plain["discriminator"].items():
        assert torch.equal(value, unrolled["discriminator"][key]), key


class PluginUnrolled:
    """Unrolled GAN written as a plugin would write it, from the generator step's arguments."""

    @hookimpl
    def ganzoo_variants(self):
        def generator_loss(fake_images, real_images, discriminate, d_optimizer):
            def objective(judge):
                return bce_discriminator_loss(judge(real_images), judge(fake_images))

            return non_saturating_generator_loss(lookahead(discriminate, d_optimizer, objective, 2)(fake_images))

        return [VariantSpec(name="plugin-unrolled", description="vanilla, unrolled 2 steps by the plugin itself",
                            discriminator_loss=bce_discriminator_loss, generator_loss=generator_loss)]


def test_a_plugin_can_write_unrolled_gan_from_the_generator_steps_arguments(tmp_path, register_plugin):
    register_plugin(PluginUnrolled(), "plugin-unrolled")
    settings = dict(steps=3, batch_size=16, progress=False)
    built_in = ganzoo.train(variant="vanilla", unroll=2, out=tmp_path / "a", **settings)
    plugin = ganzoo.train(variant="plugin-unrolled", out=tmp_path / "b", **settings)
    assert same_weights(weights(built_in), weights(plugin))


# ---- minibatch standard deviation -----------------------------------------------------------------------------------

def test_minibatch_std_appends_each_groups_mean_std():
    x = torch.randn(8, 3, 2, 2)
    out = MinibatchStdDev(4)(x)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], x)
    group = x[[1, 3, 5, 7]]  # sample i is in group i mod 2 (8 samples, groups of 4)
    expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(out[3, 3], expected.expand(2, 2)) and torch.allclose(out[5, 3, 0, 0], expected)
    vectors = MinibatchStdDev(2)(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [3.0, 3.0]]))
    assert vectors[:, 2].tolist() == pytest.approx([1.5, 1.0, 1.5, 1.0], abs=1e-3)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "pacgan-mlp"])
def test_minibatch_std_is_an_option_of_the_discriminators(tmp_path, arch):
    settings = RING if arch == "pacgan-mlp" else {}
    run = ganzoo.train(**{**dict(variant="vanilla", arch=arch, steps=2, batch_size=8), **settings,
                          "batch_size": 8}, arch_options={"mbstd": 4}, out=tmp_path / "r", progress=False)
    assert run.status == "completed"
    assert registry.architecture(arch, {"mbstd": 4}).description.endswith("minibatch std (group 4)")


# ---- bad input: one line, exit 2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--pack", "0"], "pack must be a positive integer"),
    (["--pack", "100", "--batch-size", "64"], "batch size 64 x pack 100 is larger than the 4000 training images"),
    (["--unroll", "-1"], "unroll must be a non-negative integer"),
    (["--arch-option", "mbstd=4", "--batch-size", "6"], "must be a multiple of 4"),
    (["--arch-option", "mbstd=8", "--batch-size", "4", "--pack", "4"], "batch (4) must be a multiple of 8"),
    (["--arch", "dcgan", "--dataset", "ring"], "architecture 'dcgan' takes images, but dataset 'ring' has"),
    (["--arch", "pacgan-mlp"], "architecture 'pacgan-mlp' takes vectors, but dataset 'mnist5k' has"),
])
def test_bad_remedy_settings_are_one_line_errors(tmp_path, cli, argv, message):
    code, _, err = cli("train", "--steps", "2", "--out", tmp_path / "r", "--quiet", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---- vector data end to end -----------------------------------------------------------------------------------------

def test_a_ring_run_trains_scores_and_draws_a_scatter_plot(tmp_path, cli):
    run = ganzoo.train(variant="vanilla", steps=6, checkpoint_every=3, eval_every=3, eval_samples=100,
                       out=tmp_path / "r", progress=False, **RING)
    assert run.status == "completed"
    curve = run.read_eval()
    assert list(curve.columns) == ["step", "modes", "high_quality", "reverse_kl"] and curve["step"].tolist() == [3, 6]
    assert run.stats["curve_metric"] == "reverse_kl"
    from PIL import Image

    assert Image.open(run.grid).size[0] > 200  # a scatter plot, not a 64-sample strip
    code, out, err = cli("sample", "--run", run.path, "--n", "300", "--out", tmp_path / "p.npz", "--grid",
                         tmp_path / "p.png")
    assert code == 0, err
    points = np.load(tmp_path / "p.npz")["images"]
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert Image.open(tmp_path / "p.png").mode in ("RGB", "RGBA")
    result = ganzoo.evaluate(run, progress=False)
    assert set(result.metrics) == {"modes", "high_quality", "reverse_kl"}
    assert result.protocol["n_fake"] == 5000 and result.protocol["mixture_modes.samples"] == 2500


def test_fid_on_vectors_names_the_metrics_that_apply(tmp_path, cli):
    run = ganzoo.train(variant="vanilla", steps=2, out=tmp_path / "r", progress=False, **RING)
    code, _, err = cli("eval", "--run", run.path, "--metrics", "fidelity")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metric 'fidelity' does not apply to dataset 'ring'" in err and "metrics that apply:" in err
    assert "mixture-modes" in err.split("metrics that apply:")[1]


# ---- resume ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [dict(pack=2), dict(unroll=2), dict(arch_options={"mbstd": 4})],
                         ids=["pack", "unroll", "mbstd"])
def test_remedies_resume_bit_identically(tmp_path, monkeypatch, settings):
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, variant="vanilla", steps=6, checkpoint_every=3,
                                           batch_size=16, **settings)
    assert resumed.stats["steps_this_session"] == 3
    assert_same_checkpoints(straight, resumed)


@pytest.mark.parametrize("preset", ["mode_collapse.toml", "mode_collapse_gpu.toml"])
def test_the_mode_collapse_presets_load_and_run_in_parts(preset):
    """The presets read, and a command-line selection among their own datasets and setups leaves the other
    datasets' tables out (`--datasets ring,grid` on a preset that also trains Stacked MNIST)."""
    from pathlib import Path

    from ganzoo.bench import _fitting_pairs, load_spec

    path = Path(__file__).resolve().parent.parent / "benchmarks" / preset
    spec = load_spec(path)
    assert set(spec.setups) == {"gan", "pacgan2", "pacgan3", "pacgan4", "unrolled5", "unrolled10", "mbstd"}
    assert spec.spread == "se" and spec.dataset_train["ring"]["latent_dim"] == 2
    part = load_spec(path, datasets="ring,grid", seeds="0,1", select_setups="gan,pacgan2")
    assert part.datasets == ("ring", "grid") and set(part.dataset_train) == {"ring", "grid"}
    assert list(part.setups) == ["gan", "pacgan2"]
    assert _fitting_pairs(part) == [("ring", "pacgan-mlp"), ("grid", "pacgan-mlp")]  # unrolled-dcgan left out
    # each dataset's cells get the options of the metrics they compute, not Stacked MNIST's
    assert part.metric_options_for("ring") == {}
    assert spec.metric_options_for("stacked-mnist")["stacked-modes"]["samples"] == 25600


def test_a_table_for_a_dataset_the_preset_does_not_list_is_still_a_typo(tmp_path):
    from ganzoo.bench import load_spec

    preset = tmp_path / "p.toml"
    preset.write_text('[bench]\ndatasets = ["ring"]\narchs = ["mlp"]\n[dataset_train.rnig]\nsteps = 5\n')
    with pytest.raises(GanzooError, match="dataset_train for rnig, which is not one of the benchmark's datasets"):
        load_spec(preset, datasets="ring")


def test_the_compact_table_keeps_the_column_a_mixture_is_ranked_by(tmp_path):
    """Grid rows rank by reverse KL, the metric's third column: a narrow terminal leaves other columns out first,
    and reverse KL carries its spread over seeds."""
    from ganzoo.leaderboard import render_terminal

    board = ganzoo.bench(variants="vanilla", archs="mlp", datasets="grid", seeds=[0, 1], steps=20,
                         out=tmp_path / "b", progress=False, spread="se")
    assert board.attrs["rank_by"] == {"grid": "reverse_kl"}
    text = render_terminal(board, tmp_path / "b", width=60)
    header = text.splitlines()[0]
    assert "reverse KL ↓" in header and max(map(len, text.splitlines())) <= 60, text
    assert "(reverse KL ± standard error)" in " ".join(text.split())
    vanilla = next(line for line in text.splitlines() if line.startswith("vanilla"))
    assert "±" in vanilla
