"""Class-conditional GANs (issue 20): labels into G and D, the conditioning plugins, label sampling, sampling by
class, and the conditional metrics against hand computations."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganzoo
from ganzoo import registry
from ganzoo.conditioning import (ClassBatchNorm, LabelSampler, labels_argument, proportional_labels,
                                 with_class_batchnorm)
from ganzoo.config import TrainConfig
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ConditionSpec, DatasetSpec, ImageData, ImageShape, Penalty

from conftest import assert_same_checkpoints, killed_and_resumed

SMALL = dict(variant="vanilla", arch="mlp", dataset="mnist5k", batch_size=32)


# ---- configuration and keys ----

def test_unconditional_runs_keep_their_keys():
    plain = TrainConfig()
    explicit = TrainConfig(condition="none", condition_options={}, fake_labels="uniform")
    assert plain.key() == explicit.key()
    assert not {"condition", "condition_options", "fake_labels"} & set(plain.identity())
    conditional = TrainConfig(condition="projection")
    assert conditional.key() != plain.key() and conditional.identity()["condition"] == "projection"
    assert TrainConfig(condition="acgan", fake_labels="data").key() != TrainConfig(condition="acgan").key()


@pytest.mark.parametrize("settings, message", [
    (dict(fake_labels="balanced"), "fake-labels must be one of uniform, data"),
    (dict(condition_options={"weight": 2}), "condition options given without a conditioning method"),
    (dict(fake_labels="data"), "fake-labels is for conditional runs"),
    (dict(condition=""), "condition must be"),
])
def test_bad_condition_settings_are_one_line_errors(settings, message):
    with pytest.raises(GanzooError, match=message):
        TrainConfig(**settings)


# ---- label sampling ----

def test_uniform_labels_cover_every_class_equally():
    sampler = LabelSampler("uniform", [400] * 10, torch.device("cpu"))
    labels = sampler(100_000, torch.Generator().manual_seed(0))
    share = torch.bincount(labels, minlength=10).double() / len(labels)
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    assert torch.allclose(share, torch.full((10,), 0.1, dtype=torch.float64), atol=0.005)


def test_data_labels_follow_the_training_split_and_are_fixed_by_the_seed():
    counts = [700, 100, 200]
    sampler = LabelSampler("data", counts, torch.device("cpu"))
    labels = sampler(100_000, torch.Generator().manual_seed(3))
    share = torch.bincount(labels, minlength=3).double() / len(labels)
    assert torch.allclose(share, torch.tensor([0.7, 0.1, 0.2], dtype=torch.float64), atol=0.01)
    again = sampler(100_000, torch.Generator().manual_seed(3))
    other = sampler(100_000, torch.Generator().manual_seed(4))
    assert torch.equal(labels, again) and not torch.equal(labels, other)
    uniform = LabelSampler("uniform", counts, torch.device("cpu"))(100_000, torch.Generator().manual_seed(3))
    assert abs(float((uniform == 0).double().mean()) - 1 / 3) < 0.01


def test_proportional_labels_for_scoring():
    labels = proportional_labels([700, 100, 200], 1000, seed=0)
    assert torch.bincount(labels).tolist() == [700, 100, 200]
    assert torch.bincount(proportional_labels([1, 1, 1], 10, 0)).tolist() == [4, 3, 3]  # largest remainders
    assert torch.equal(labels, proportional_labels([700, 100, 200], 1000, seed=0))
    assert not torch.equal(labels, proportional_labels([700, 100, 200], 1000, seed=1))


def test_labels_argument():
    assert labels_argument(3, 4, 10).tolist() == [3, 3, 3, 3]
    assert labels_argument("1,2,3", 3, 10).tolist() == [1, 2, 3]
    assert labels_argument("balanced", 6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(GanzooError, match="class 10 does not exist"):
        labels_argument(10, 2, 10)
    with pytest.raises(GanzooError, match="2 labels given for 3 samples"):
        labels_argument("1,2", 3, 10)
    with pytest.raises(GanzooError, match="comma-separated"):
        labels_argument("three", 3, 10)


# ---- a third-party conditioning plugin that records what the loop hands it ----

class Spy:
    """A conditioning plugin registered at run time: its networks ignore the label (so the unconditional run's weights
    and draws are unchanged up to the first label draw) and its terms record the labels and add constants."""

    def __init__(self, d_weight=3.0, g_weight=5.0):
        self.seen = []
        self.d_weight, self.g_weight = d_weight, g_weight

    @hookimpl
    def ganzoo_conditionings(self):
        seen = self.seen

        class IgnoreLabelG(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, z, y):
                return self.net(z)

        class IgnoreLabelD(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x, y):
                return self.net(x)

        def d_term(real, real_labels, fake_labels):
            seen.append((real_labels.clone(), fake_labels.clone()))
            return real.logits.new_tensor(1.0)

        def g_term(fake, fake_labels):
            return fake.logits.new_tensor(1.0)

        return [ConditionSpec(
            name="spy", description="records labels",
            generator=lambda build, latent_dim, k: IgnoreLabelG(build(latent_dim)),
            discriminator=lambda net, width, k: IgnoreLabelD(net),
            discriminator_terms=(Penalty("spy_d", d_term, self.d_weight),),
            generator_terms=(Penalty("spy_g", g_term, self.g_weight),))]


def test_fake_labels_are_drawn_not_the_real_batch_labels_and_terms_are_weighted(tmp_path, register_plugin):
    spy = register_plugin(Spy(d_weight=3.0, g_weight=5.0), "spy-plugin")
    run = ganzoo.train(**SMALL, steps=30, condition="spy", out=tmp_path / "spy", progress=False)
    plain = ganzoo.train(**SMALL, steps=30, out=tmp_path / "plain", progress=False)
    assert len(spy.seen) == 30
    real = torch.cat([r for r, _ in spy.seen])
    fake = torch.cat([f for _, f in spy.seen])
    assert (real != fake).float().mean() > 0.8  # independent draws, not the real batch's labels
    assert torch.bincount(fake, minlength=10).min() > 0.05 * len(fake)
    # the real labels are the real batch's: mnist5k's training labels are 400 per class
    assert torch.bincount(real, minlength=10).max() < 0.2 * len(real)
    # the terms enter D's and G's objectives with their weights; the first step differs only by them
    first, base = run.read_log().iloc[0], plain.read_log().iloc[0]
    assert first["d_loss"] == pytest.approx(base["d_loss"] + 3.0, abs=1e-5)
    assert first["g_loss"] == pytest.approx(base["g_loss"] + 5.0, abs=1e-5)
    assert first["spy_d"] == 1.0 and first["spy_g"] == 1.0  # logged unweighted
    resolved = json.loads((run.path / "config.json").read_text())["resolved"]["condition"]
    assert resolved["terms"] == {"discriminator": [{"name": "spy_d", "weight": 3.0}],
                                 "generator": [{"name": "spy_g", "weight": 5.0}]}
    assert resolved["class_counts"] == [400] * 10 and resolved["fake_labels"] == "uniform"


# ---- the built-in methods against their formulas ----

class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.LeakyReLU(0.2))
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        h = self.body(x)
        return self.head(h).squeeze(1), h


def test_projection_adds_the_inner_product_of_the_class_embedding_with_the_features():
    torch.manual_seed(0)
    spec = registry.condition("projection")
    net = TinyD()
    D = spec.discriminator(net, 3, 5)
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 4, 0])
    logits, features = D(x, y)
    psi, h = net(x)
    expected = psi + (D.embed.weight[y] * h).sum(1)
    assert torch.allclose(logits, expected) and torch.equal(features, h)


def test_acgan_head_terms_and_forms():
    torch.manual_seed(0)
    published, modified = registry.condition("acgan"), registry.condition("acgan", {"fake_term": "false"})
    weighted = registry.condition("acgan", {"weight": 2.5})
    assert [t.name for t in published.discriminator_terms] == ["ac_real", "ac_fake"]
    assert [t.name for t in modified.discriminator_terms] == ["ac_real"]
    assert [t.name for t in published.generator_terms] == ["ac_g"]
    assert {t.weight for t in weighted.discriminator_terms + weighted.generator_terms} == {2.5}
    assert "published" in published.record["form"] and "ACGAN-Mod" in modified.record["form"]
    net = TinyD()
    D = published.discriminator(net, 3, 4)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 3, 1])
    logits, h, class_logits = D(x, y)
    assert torch.equal(logits, net(x)[0]) and torch.allclose(class_logits, D.classes(h))
    from ganzoo.specs import DiscriminatorOutput

    out = DiscriminatorOutput(logits, h, class_logits)
    by_hand = -torch.log_softmax(class_logits, 1)[torch.arange(5), y].mean()
    real_term = published.discriminator_terms[0].compute(real=out, real_labels=y)
    fake_term = published.discriminator_terms[1].compute(fake=out, fake_labels=y)
    assert torch.allclose(real_term, by_hand) and torch.allclose(fake_term, by_hand)


def test_class_batchnorm_scales_and_shifts_per_class():
    torch.manual_seed(0)
    layer = ClassBatchNorm(nn.BatchNorm1d(4), 3)
    with torch.no_grad():
        layer.gain.weight.copy_(torch.randn(3, 4))
        layer.bias.weight.copy_(torch.randn(3, 4))
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    layer.labels = y
    normalised = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(layer(x), normalised * layer.gain.weight[y] + layer.bias.weight[y], atol=1e-5)
    G = registry.architecture("mlp").build_generator(10, ImageShape(1, 28))
    assert with_class_batchnorm(G, 10) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) and m.affine for m in G.modules())


def test_every_method_trains_with_several_variants_and_architectures(tmp_path):
    for condition, variant, arch, options in [("projection", "hinge", "dcgan", {}), ("acgan", "vanilla", "mlp", {}),
                                              ("concat", "lsgan", "mlp", {}),
                                              ("projection", "wgan-gp", "mlp", {"generator": "embedding"})]:
        run = ganzoo.train(variant=variant, arch=arch, condition=condition, condition_options=options, steps=3,
                           batch_size=8, out=tmp_path / f"{condition}-{variant}-{arch}", progress=False,
                           arch_options={"width": 8} if arch == "dcgan" else {})
        assert run.status == "completed"
        record = json.loads((run.path / "config.json").read_text())["resolved"]["condition"]
        where = record["generator"]
        if condition == "projection" and not options:
            assert "conditional BatchNorm" in where
        else:
            assert "embedding joined to z" in where
        samples = ganzoo.sample(run, n=6, labels=[0, 1, 2, 3, 4, 5])
        assert samples.shape == (6, 1, 28, 28)


# ---- resume, errors ----

@pytest.mark.parametrize("condition", ["acgan", "projection"])
def test_conditional_runs_resume_bit_identically(tmp_path, monkeypatch, condition):
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, **SMALL, steps=6, checkpoint_every=3,
                                           condition=condition)
    assert resumed.stats["steps_this_session"] == 3
    assert_same_checkpoints(straight, resumed)


def test_conditional_errors_are_one_line(cli, tmp_path, register_plugin):
    class Unlabelled:
        @hookimpl
        def ganzoo_datasets(self):
            def load(split, root, download):
                return ImageData(torch.zeros(64, 1, 28, 28, dtype=torch.uint8))

            return [DatasetSpec("blank", "blank images", ImageShape(1, 28), load)]

        @hookimpl
        def ganzoo_architectures(self):
            import dataclasses

            from ganzoo_plugins.mlp import mlp

            return [dataclasses.replace(mlp(), name="plain-mlp", conditions=(), options={}, configure=None)]

    register_plugin(Unlabelled(), "unlabelled")
    cases = [(["--dataset", "blank", "--condition", "projection"], "needs a labelled dataset"),
             (["--arch", "plain-mlp", "--condition", "acgan"], "cannot take conditioning 'acgan'"),
             (["--condition", "projection", "--pack", "2"], "cannot be combined with --condition"),
             (["--condition", "projektion"], "unknown condition 'projektion'; available: acgan"),
             (["--condition", "acgan", "--condition-option", "wieght=2"], "has no option wieght"),
             (["--condition", "projection", "--condition-option", "generator=cbn"], "must be auto, batchnorm")]
    for argv, message in cases:
        code, out, err = cli("train", "--steps", "2", "--quiet", "--out", tmp_path / "x", "--overwrite", *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_sampling_by_class(cli, tmp_path, tiny_run):
    run = ganzoo.train(**SMALL, steps=4, condition="acgan", out=tmp_path / "acgan", progress=False)
    code, out, err = cli("sample", "--run", run.path, "--n", "5", "--class", "3", "--out", tmp_path / "three.npz")
    assert code == 0, err
    stored = np.load(tmp_path / "three.npz")
    assert stored["labels"].tolist() == [3] * 5 and stored["images"].shape == (5, 1, 28, 28)
    code, out, err = cli("sample", "--run", run.path, "--n", "20", "--labels", "balanced", "--out",
                         tmp_path / "all.npz", "--grid", tmp_path / "all.png")
    assert code == 0 and np.load(tmp_path / "all.npz")["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    from PIL import Image

    assert Image.open(tmp_path / "all.png").size == (2 * 30 + 2, 10 * 30 + 2)  # one row of 2 per class
    # the training grid: 8 columns, row k asked for class k, a row for each of the 10 classes
    assert Image.open(run.grid).size == (8 * 30 + 2, 10 * 30 + 2)
    # the same latents and labels give the same images; another class, other images
    a = ganzoo.sample(run, n=4, labels=[1, 1, 1, 1])
    assert torch.equal(a, ganzoo.sample(run, n=4, labels=[1, 1, 1, 1]))
    assert not torch.equal(a, ganzoo.sample(run, n=4, labels=[7, 7, 7, 7]))
    code, out, err = cli("sample", "--run", tiny_run.path, "--n", "2", "--class", "1", "--out", tmp_path / "u.npz")
    assert code == 2 and "is unconditional" in err


# ---- bench ----

def test_bench_conditions_axis(tmp_path):
    from ganzoo.bench import BenchSpec, load_spec

    spec = BenchSpec(variants=("vanilla",), conditions=("none", "projection", "acgan"),
                     condition_options={"acgan": {"fake_term": False}})
    assert spec.setup_names() == ("", "projection", "acgan")
    assert spec.train_config("vanilla", "mlp", "mnist5k", 0, setup="").key() == \
        BenchSpec(variants=("vanilla",)).train_config("vanilla", "mlp", "mnist5k", 0).key()
    acgan = spec.train_config("vanilla", "mlp", "mnist5k", 0, setup="acgan")
    assert acgan.condition == "acgan" and acgan.condition_options["fake_term"] is False
    crossed = BenchSpec(variants=("vanilla",), conditions=("none", "concat"), setups={"ema": {"ema": 0.9}})
    assert crossed.setup_names() == ("ema", "ema-concat")
    toml = tmp_path / "c.toml"
    toml.write_text('[bench]\nvariants = ["hinge"]\nconditions = ["projection"]\n'
                    '[condition_options.projection]\ngenerator = "embedding"\n')
    loaded = load_spec(toml)
    assert loaded.train_config("hinge", "mlp", "mnist5k", 0, setup="projection").condition_options["generator"] \
        == "embedding"
    with pytest.raises(GanzooError, match="condition_options for concat"):
        BenchSpec(conditions=("projection",), condition_options={"concat": {}})


# ---- conditional metrics against hand computations ----

@pytest.fixture(scope="module")
def conditional_scorer(reference_classifier):
    from ganzoo.evaluation import Scorer

    return Scorer("mnist5k", "classifier", device="cpu", progress=False,
                  metrics=["class-accuracy", "intra-fid", "class-prc"])


def _frechet_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu, nu = a.mean(0), b.mean(0)
    s, t = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s @ t).real
    return float(((mu - nu) ** 2).sum() + np.trace(s + t - 2 * root))


def _prc_by_hand(fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    def radii(x):
        return torch.cdist(x, x).sort(1).values[:, k]  # k-th neighbour, itself at 0 aside

    rr, rf = radii(real), radii(fake)
    d = torch.cdist(fake, real)
    precision = float((d <= rr[None, :]).any(1).double().mean())
    recall = float((d.T <= rf[None, :]).any(1).double().mean())
    return precision, recall


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_conditional_metrics_perfect_and_label_blind_samplers(conditional_scorer):
    reference = conditional_scorer.reference()
    images, labels = reference.samples, reference.labels
    classifier = conditional_scorer.classifier()
    accuracy = float((classifier.logits(images).argmax(1) == labels).float().mean())
    perfect = conditional_scorer.score(images, labels=labels)
    assert perfect.metrics["cond_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert perfect.metrics["intra_fid"] == pytest.approx(0.0, abs=1e-2)
    assert perfect.metrics["class_precision"] == 1.0 and perfect.metrics["class_recall"] == 1.0
    blind_labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    blind = conditional_scorer.score(images, labels=blind_labels)
    assert abs(blind.metrics["cond_accuracy"] - 0.1) < 0.04  # about 1/K
    assert blind.metrics["intra_fid"] > 20 * max(perfect.metrics["intra_fid"], 1.0)
    per_class = json.loads(blind.protocol["intra_fid.per_class"])
    features = conditional_scorer.features().features(images).double().numpy()
    for k in (0, 7):
        by_hand = _frechet_by_hand(features[(blind_labels == k).numpy()], features[(labels == k).numpy()])
        assert per_class[k] == pytest.approx(by_hand, rel=1e-3)
    assert blind.metrics["intra_fid"] == pytest.approx(sum(per_class) / 10, rel=1e-3)
    recalls = json.loads(blind.protocol["class_prc.recall_per_class"])
    feats = torch.from_numpy(features).float()
    for k in (2, 5):
        p, r = _prc_by_hand(feats[blind_labels == k], feats[labels == k])
        assert json.loads(blind.protocol["class_prc.precision_per_class"])[k] == pytest.approx(p, abs=1e-3)
        assert recalls[k] == pytest.approx(r, abs=1e-3)
    assert blind.metrics["class_recall_worst"] == pytest.approx(min(recalls), abs=1e-4)
    # a sampler without labels (an unconditional generator) gets NaN, and says why
    unlabelled = conditional_scorer.score(images)
    assert math.isnan(unlabelled.metrics["cond_accuracy"]) and "cond_accuracy.labels" in unlabelled.protocol


@pytest.mark.slow
def test_cas_trains_on_generated_and_tests_on_held_out_real(reference_classifier):
    from ganzoo.evaluation import Scorer

    scorer = Scorer("mnist5k", "classifier", device="cpu", progress=False, metrics=["cas"],
                    metric_options={"cas": {"max_samples": 1000}})
    reference = scorer.reference()
    images, labels = reference.samples, reference.labels
    classifier = scorer.classifier()
    real_accuracy = float((classifier.logits(images).argmax(1) == labels).float().mean())
    # "generated" images that are the test images themselves with their labels: a perfect sampler overfit to them
    perfect = scorer.score(images, labels=labels).metrics
    assert perfect["cas_real"] == pytest.approx(real_accuracy) and perfect["cas"] > 0.9
    assert perfect["cas_gap"] == pytest.approx(perfect["cas_real"] - perfect["cas"])
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    blind = scorer.score(images, labels=shuffled).metrics
    assert blind["cas"] < 0.3


@pytest.mark.slow
def test_the_label_reaches_g_and_d_class_control_is_learned(tmp_path, reference_classifier):
    """A few hundred steps on mnist5k: the reference classifier finds the requested class far above chance; the same
    generator with its label input zeroed (every sample asked for class 0) does not follow the requested labels."""
    from ganzoo.sampling import generate, load_generator

    classify = reference_classifier.classify
    for condition in ("acgan", "projection"):
        run = ganzoo.train(variant="vanilla", arch="mlp", dataset="mnist5k", steps=400, condition=condition,
                           out=tmp_path / condition, progress=False)
        result = ganzoo.evaluate(run, n_fake=1000, metrics=["class-accuracy"], progress=False)
        assert result.metrics["cond_accuracy"] > 0.4, (condition, result.metrics)
        generator, _ = load_generator(run, "cpu")
        requested = torch.arange(1000) % 10
        zeroed = generate(generator, 1000, 100, 0, labels=torch.zeros(1000, dtype=torch.long))
        hits = float((classify(zeroed).argmax(1) == requested).float().mean())
        assert hits < 0.25, (condition, hits)  # about 1/K: the requested class is only right when it is 0
