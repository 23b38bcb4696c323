"""Evaluation: IS/FID/KID correctness against independent formulas, the protocol, real-data references,
evaluation during training, and bad input through the CLI."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

import ganzoo
from ganzoo import registry
from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.evaluation import COVERAGE, METRICS, Scorer, TrainingEvaluator, evaluate_images, real_reference
from ganzoo.hookspecs import hookimpl
from ganzoo.sampling import generate
from ganzoo.specs import LOGITS_SINK, ExtractorSpec, PreparedExtractor
from ganzoo_plugins import classifier

PROTOCOL_FIELDS = [
    "scores_are", "extractor", "extractor_weights_sha256", "feature_layers", "n_fake", "n_real", "reference_split",
    "real_subset", "image_size", "resize", "channels", "is_splits", "kid_subsets", "kid_subset_size",
    "kid_subset_size_capped", "seed", "torch_fidelity_version", "torch_version", "ganzoo_version",
    "classifier_accuracy",
]


@pytest.fixture(scope="module")
def test_split():
    return load_split("mnist5k", "test")


def classifier_features(prepared, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The reference classifier's (logits, penultimate features) computed here, outside torch-fidelity."""
    payload = classifier.load_classifier(prepared.weights_path)
    net = classifier.LeNet(1, 10)
    net.load_state_dict(payload["state_dict"])
    net.eval()
    with torch.no_grad():
        logits, features = net(images.float() / 255.0)
    return logits.double().numpy(), features.numpy()


def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


# ---- FID and KID against independent implementations on the same features ----


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # ReLU features: some units never fire
def test_fid_matches_scipy_sqrtm(reference_classifier, test_split):
    fake = noisy(load_split("mnist5k", "train").images[:600], 40)
    result = evaluate_images(fake, "mnist5k", progress=False)
    _, f1 = classifier_features(reference_classifier, fake)
    _, f2 = classifier_features(reference_classifier, test_split.images)
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert expected > 10  # a clearly nonzero distance, so the relative error means something
    assert abs(result.metrics["fid"] - expected) / expected < 1e-4


def test_kid_matches_direct_unbiased_mmd_on_the_same_subsets(reference_classifier, test_split):
    fake = noisy(load_split("mnist5k", "train").images[:300], 40, seed=1)
    result = evaluate_images(fake, "mnist5k", seed=7, progress=False)
    p = result.protocol
    assert p["kid_subset_size"] == 300 and p["kid_subset_size_capped"] is True  # capped at the 300 generated
    _, f1 = classifier_features(reference_classifier, fake)
    _, f2 = classifier_features(reference_classifier, test_split.images)
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    m, d = p["kid_subset_size"], f1.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731 - cubic polynomial, gamma 1/d, coef0 1
    rng = np.random.RandomState(p["seed"])  # the subsets torch-fidelity draws, in the same order
    mmds = []
    for _ in range(p["kid_subsets"]):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        mmds.append(within - 2 * kxy.sum() / (m * m))
    assert result.metrics["kid_mean"] == pytest.approx(np.mean(mmds), rel=1e-4)
    assert result.metrics["kid_std"] == pytest.approx(np.std(mmds), rel=1e-3)


# ---- IS on a controlled extractor: 1 for identical predictions, K for balanced confident ones ----

K = 4
_STUB = {}


def _stub_fidelity_class():
    if "cls" not in _STUB:
        from torch_fidelity import register_feature_extractor
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase

        class Stub(FeatureExtractorBase):
            """Predicts class (first pixel mod K) with near-certainty; features are the first 16 pixels."""

            def __init__(self, name, features_list, **kwargs):
                super().__init__(name, features_list)
                self.sink = kwargs.get(LOGITS_SINK)

            def forward(self, x):
                logits = F.one_hot(x[:, 0, 0, 0].long() % K, K).float() * 40.0
                if self.sink is not None:
                    self.sink.append(logits)
                out = {"logits": logits, "features": x[:, 0, 0, :16].float()}
                return tuple(out[n] for n in self.features_list)

            @staticmethod
            def get_provided_features_list():
                return "logits", "features"

            @staticmethod
            def get_default_feature_layer_for_metric(metric):
                return "logits" if metric == "isc" else "features"

            @staticmethod
            def can_be_compiled():
                return False

        register_feature_extractor("ganzoo-test-stub", Stub)
        _STUB["cls"] = Stub
    return _STUB["cls"]


class StubPlugin:
    """A third-party extractor plugin: two names for the same network, told apart only by the weights hash."""

    @hookimpl
    def ganzoo_feature_extractors(self):
        def prepare_with(sha):
            def prepare(request):
                _stub_fidelity_class()
                return PreparedExtractor(fidelity_name="ganzoo-test-stub", weights_path="", weights_sha256=sha,
                                         feature_layers={"isc": "logits", "fid": "features", "kid": "features"},
                                         scores_are="stub scores", resize="none", feature_dim=16, num_classes=K)
            return prepare

        return [ExtractorSpec(name="stub", description="test stub", prepare=prepare_with("a" * 64)),
                ExtractorSpec(name="stub-b", description="test stub", prepare=prepare_with("b" * 64))]


def with_first_pixel(values: list[int]) -> torch.Tensor:
    images = torch.randint(0, 256, (len(values), 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    images[:, 0, 0, 0] = torch.tensor(values, dtype=torch.uint8)
    return images


def test_is_and_class_coverage_extremes(register_plugin):
    register_plugin(StubPlugin(), "stub-extractor")
    # torch-fidelity shuffles samples (seeded) before cutting the 10 IS splits; lay the classes out so that
    # every split holds each class equally often, as "balanced" means for IS.
    order = np.random.RandomState(0).permutation(400)
    classes = [0] * 400
    for position, index in enumerate(order):
        classes[index] = position % K
    balanced = evaluate_images(with_first_pixel(classes), "mnist5k", "stub", seed=0, progress=False,
                               metrics=["fidelity"])
    assert balanced.protocol["is_splits"] == 10
    assert balanced.metrics["is_mean"] == pytest.approx(K, rel=1e-9)
    identical = evaluate_images(with_first_pixel([2] * 400), "mnist5k", "stub", progress=False, metrics=["fidelity"])
    assert identical.metrics["is_mean"] == pytest.approx(1.0, abs=1e-9)
    # class coverage is its own metric plugin, on the reference classifier's logits: here, constructed ones
    from ganzoo_plugins.class_coverage import class_coverage

    def one_hot(labels):
        return F.one_hot(torch.tensor(labels), K).float()

    assert class_coverage(one_hot(classes), K) == {"classes_covered": K, "class_kl": pytest.approx(0, abs=1e-12)}
    assert class_coverage(one_hot([2] * 400), K) == {"classes_covered": 1, "class_kl": pytest.approx(math.log(K))}
    # 96% in one class, 4% in another: the second is under the 5% line.
    assert class_coverage(one_hot([0] * 384 + [1] * 16), K)["classes_covered"] == 1
    assert balanced.protocol["extractor"] == "stub" and balanced.protocol["scores_are"] == "stub scores"


# ---- sanity of the scores with the reference classifier ----


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(reference_classifier, test_split):
    fids = [evaluate_images(noisy(test_split.images, sigma), "mnist5k", progress=False).metrics["fid"]
            for sigma in (0, 20, 40, 80)]
    assert abs(fids[0]) < 1e-6
    assert fids == sorted(fids) and fids[1] > 1


def test_real_held_out_digits_score_high_noise_and_one_class_near_one(reference_classifier, test_split):
    real = evaluate_images(test_split.images, "mnist5k", progress=False)
    assert real.metrics["is_mean"] >= 9.0
    assert real.metrics["classes_covered"] == 10 and real.metrics["class_kl"] < 0.01
    noise = torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert evaluate_images(noise, "mnist5k", progress=False).metrics["is_mean"] < 1.5
    train = load_split("mnist5k", "train")
    one_class = evaluate_images(train.images[train.labels == 3], "mnist5k", progress=False)
    assert one_class.metrics["is_mean"] < 1.5 and one_class.metrics["classes_covered"] == 1


def test_real_reference_row(reference_classifier):
    result = real_reference("mnist5k", progress=False)
    m, p = result.metrics, result.protocol
    assert p["real_vs_real"] is True and p["n_fake"] == 4000 and p["n_real"] == 1000
    assert p["reference_split"] == "test" and "'train'" in p["generated_from"]
    assert m["is_mean"] >= 9.0 and m["classes_covered"] == 10 and 0 < m["fid"] < 20


def test_protocol_and_record(reference_classifier, test_split):
    result = evaluate_images(test_split.images[:50], "mnist5k", n_real=200, seed=3, progress=False)
    p = result.protocol
    for name in PROTOCOL_FIELDS:
        assert name in p, name
    assert set(result.metrics) == set(METRICS) | {"precision", "recall"} | set(COVERAGE)
    assert list(result.metrics)[0] == "fid" and result.rank_by == "fid"
    assert p["n_fake"] == 50 and p["n_real"] == 200 and p["real_subset"] == "random 200 of 1000 (seed 3)"
    assert p["is_splits"] == 10 and p["kid_subsets"] == 100
    assert p["kid_subset_size"] == 50 and p["kid_subset_size_capped"] is True
    assert p["channels"].startswith("grayscale tiled to 3") and p["image_size"] == "28x28"
    assert p["extractor_weights_sha256"] == reference_classifier.weights_sha256
    assert p["classifier_accuracy"] == reference_classifier.info["classifier_accuracy"]
    assert p["scores_are"].startswith("classifier IS/FID/KID") and "not comparable" in p["scores_are"]
    record = result.to_record()
    assert {k for k in record if not k.startswith("protocol.")} == set(METRICS) | {"precision", "recall", "metric_info"} | set(COVERAGE)
    assert record["protocol.seed"] == 3
    frame = pd.DataFrame([record])  # one pandas row, every value a scalar
    assert frame.shape == (1, len(record))
    json.dumps(record)


def test_bad_images_are_one_line_errors(reference_classifier, test_split):
    with pytest.raises(GanzooError, match=r"3 x 32 x 32 .* but dataset 'mnist5k' has 1 x 28 x 28"):
        evaluate_images(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), "mnist5k", progress=False)
    with pytest.raises(GanzooError, match="must be uint8"):
        evaluate_images(torch.zeros(10, 1, 28, 28), "mnist5k", progress=False)
    with pytest.raises(GanzooError, match="at least 2"):
        evaluate_images(test_split.images[:1], "mnist5k", progress=False)
    with pytest.raises(GanzooError, match="n_real=5000 is more than the 1000"):
        evaluate_images(test_split.images[:10], "mnist5k", n_real=5000, progress=False)
    with pytest.raises(GanzooError, match="unknown extractor 'inception'; available: classifier"):
        evaluate_images(test_split.images[:10], "mnist5k", "inception", progress=False)


def test_evaluation_leaves_the_global_rng_alone(reference_classifier, test_split):
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    evaluate_images(test_split.images[:100], "mnist5k", progress=False)
    assert torch.equal(torch.rand(4), expected)


def test_real_features_are_cached_per_extractor_weights(reference_classifier, test_split, register_plugin):
    from ganzoo import caches

    scorer = Scorer("mnist5k", progress=False)
    first = scorer.score(test_split.images[:100])
    entry = torch.load(caches.fidelity_entry(scorer.real_cache_name), weights_only=True)
    assert len(entry["files"]) == 3, entry["files"]  # the real side's logits, features and FID statistics
    assert scorer.score(test_split.images[:100]).metrics == first.metrics  # read back from the cache
    register_plugin(StubPlugin(), "stub-extractor")
    names = {scorer.real_cache_name, Scorer("mnist5k", n_real=500, progress=False).real_cache_name,
             Scorer("mnist5k", "stub", progress=False).real_cache_name,
             Scorer("mnist5k", "stub-b", progress=False).real_cache_name}  # same network, other weights
    assert len(names) == 4


# ---- a trained generator against the same generator untrained ----


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, reference_classifier):
    """The core defaults (vanilla, mlp, mnist5k, Adam 2e-4), 600 steps, scored every 300 steps during training.

    600, not 400: at 400 steps G still puts most samples in two or three classes, and whether the third holds
    the 5% that counts it as covered was decided by float rounding (3.9% with one CPU thread, 11.8% with two:
    OMP_NUM_THREADS=1 failed the test). At 600 the third class holds 15-22% with 1, 2, 3 or 4 threads, FID is
    730-820 against the untrained 1614, and IS 2.4-2.9."""
    return ganzoo.train(steps=600, checkpoint_every=300, eval_every=300, eval_samples=1000,
                        out=tmp_path_factory.mktemp("trained") / "run", progress=False)


def test_trained_generator_beats_the_untrained_one_by_far(trained_run):
    trained = ganzoo.evaluate(trained_run, n_fake=2000, progress=False)
    config = trained_run.config
    torch.manual_seed(config.seed)  # the initial weights training started from
    untrained = registry.architecture(config.arch).build_generator(config.latent_dim,
                                                                   registry.dataset(config.dataset).shape)
    before = evaluate_images(generate(untrained, 2000, config.latent_dim, 0), "mnist5k", progress=False)
    assert trained.metrics["fid"] < 0.65 * before.metrics["fid"] and before.metrics["fid"] - trained.metrics["fid"] > 400
    assert trained.metrics["is_mean"] > 1.5 > before.metrics["is_mean"]
    assert trained.metrics["classes_covered"] >= 3 > before.metrics["classes_covered"]
    p = trained.protocol
    assert p["steps_trained"] == 600 and p["run_status"] == "completed" and p["train_wall_time_s"] > 0
    assert p["n_fake"] == 2000 and "at step 600" in p["generated_from"]


def test_training_keeps_an_fid_curve(trained_run):
    curve = trained_run.read_eval()
    assert list(curve.columns) == ["step", "fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall",
                                   *COVERAGE]
    assert curve["step"].tolist() == [300, 600]
    stats = trained_run.stats
    assert stats["best_fid"] == curve["fid"].min()
    assert stats["best_fid_step"] == int(curve.loc[curve["fid"].idxmin(), "step"])
    assert stats["final_fid"] == curve["fid"].iloc[-1] and stats["eval_extractor"] == "classifier"
    protocol = json.loads((trained_run.path / "eval.json").read_text())
    assert protocol["n_fake"] == 1000 and protocol["extractor"] == "classifier"


EVAL_FAST = dict(steps=30, checkpoint_every=10, batch_size=32)


def state_of(path):
    return torch.load(path / "checkpoint.pt", weights_only=True)


def test_evaluating_during_training_changes_nothing_and_resumes_cleanly(reference_classifier, tmp_path,
                                                                        monkeypatch):
    plain = ganzoo.train(out=tmp_path / "plain", progress=False, **EVAL_FAST)
    scored = ganzoo.train(out=tmp_path / "scored", progress=False, eval_every=5, eval_samples=100, **EVAL_FAST)
    for part in ("generator", "discriminator"):
        a, b = state_of(plain.path)[part], state_of(scored.path)[part]
        assert all(torch.equal(a[k], b[k]) for k in a), part
    cols = ["step", "d_loss", "g_loss", "d_real", "d_fake"]
    pd.testing.assert_frame_equal(plain.read_log()[cols], scored.read_log()[cols])
    assert scored.read_eval()["step"].tolist() == [5, 10, 15, 20, 25, 30]

    # Kill a run right after it scored step 25, past its last checkpoint (step 20): resuming drops that row
    # and scores it again, giving exactly the uninterrupted curve.
    real_call = TrainingEvaluator.__call__

    def score_then_die(self, generator, step):
        spent = real_call(self, generator, step)
        if step == 25:
            raise KeyboardInterrupt
        return spent

    monkeypatch.setattr(TrainingEvaluator, "__call__", score_then_die)
    with pytest.raises(KeyboardInterrupt):
        ganzoo.train(out=tmp_path / "resumed", progress=False, eval_every=5, eval_samples=100, **EVAL_FAST)
    monkeypatch.setattr(TrainingEvaluator, "__call__", real_call)
    assert pd.read_csv(tmp_path / "resumed" / "eval.csv")["step"].tolist() == [5, 10, 15, 20, 25]
    resumed = ganzoo.train(out=tmp_path / "resumed", progress=False, eval_every=5, eval_samples=100, **EVAL_FAST)
    pd.testing.assert_frame_equal(resumed.read_eval(), scored.read_eval())
    assert resumed.stats["best_fid"] == scored.stats["best_fid"]

    # Resuming with another extractor would mix two protocols in one curve: refused.
    (tmp_path / "resumed" / "run.json").write_text(
        (tmp_path / "resumed" / "run.json").read_text().replace('"completed"', '"running"'))
    eval_json = tmp_path / "resumed" / "eval.json"
    eval_json.write_text(eval_json.read_text().replace(reference_classifier.weights_sha256, "0" * 64))
    with pytest.raises(GanzooError, match="evaluated during training with extractor 'classifier'"):
        ganzoo.train(out=tmp_path / "resumed", progress=False, eval_every=5, eval_samples=100, **EVAL_FAST)


# ---- the command line ----


def test_cli_eval_prints_scores_and_protocol(cli, tiny_run, reference_classifier):
    code, out, err = cli("eval", "--run", tiny_run.path, "--n", "300", "--n-real", "500")
    assert code == 0, err
    assert "classifier IS/FID/KID" in out and "classifier FID" in out and "protocol:" in out
    assert "kid_subset_size" in out and "classes covered" in out
    code, out, err = cli("eval", "--run", tiny_run.path, "--n", "50", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert set(METRICS) <= set(record) and record["protocol.n_fake"] == 50
    assert record["protocol.kid_subset_size"] == 50 and record["protocol.kid_subset_size_capped"] is True
    assert record["protocol.steps_trained"] == 20 and record["protocol.extractor"] == "classifier"
    code, out, err = cli("eval", "--real", "mnist5k", "--n", "500", "--json")
    assert code == 0, err
    assert json.loads(out)["protocol.real_vs_real"] is True


@pytest.mark.parametrize("argv, message", [
    (["--n", "1"], "at least 2"),
    (["--n", "10", "--n-real", "99999"], "more than the 1000"),
    (["--extractor", "nope"], "unknown extractor 'nope'"),
])
def test_cli_eval_bad_input(cli, tiny_run, reference_classifier, argv, message):
    code, out, err = cli("eval", "--run", tiny_run.path, *argv)
    assert code == 2 and out == ""
    assert err.startswith("ganzoo: error:") and message in err and err.count("\n") == 1, err


def test_cli_eval_of_a_run_without_checkpoint(cli, tmp_path, tiny_run):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run.path, broken)
    (broken / "checkpoint.pt").unlink()
    code, out, err = cli("eval", "--run", broken)
    assert code == 2 and "has no checkpoint" in err and err.count("\n") == 1
    code, out, err = cli("eval", "--run", tmp_path / "nowhere")
    assert code == 2 and "run folder not found" in err


def test_cli_train_eval_every(cli, tmp_path, reference_classifier):
    code, out, err = cli("train", "--steps", "20", "--batch-size", "32", "--eval-every", "10", "--eval-samples", "100",
                         "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    assert "classifier FID during training: best" in out
    assert pd.read_csv(tmp_path / "r" / "eval.csv")["step"].tolist() == [10, 20]
    code, out, err = cli("train", "--steps", "20", "--eval-every", "-1", "--out", tmp_path / "s")
    assert code == 2 and "eval-every must be a non-negative integer" in err
