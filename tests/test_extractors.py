"""Feature extractors: the offline reference classifier and the safe loading path of the standard Inception."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.evaluation import evaluate_images
from ganzoo_plugins import classifier, inception

OFFICIAL = "weights-inception-2015-12-05-6726825d.pth"


# ---- the reference classifier ----


def test_reference_classifier_is_cached_and_accurate(reference_classifier):
    prepared = reference_classifier
    path = Path(prepared.weights_path)
    assert path.is_file() and path.parent.name == "classifiers"
    assert prepared.weights_sha256 == classifier.weights_sha256(classifier.load_classifier(path)["state_dict"])
    assert prepared.info["classifier_accuracy"] >= 0.97  # held out: mnist5k's 1,000 reference digits
    assert "not comparable with Inception" in prepared.scores_are
    assert prepared.feature_layers == {"isc": "logits", "fid": "features", "kid": "features"}
    # Asking again loads the cached file: same weights, nothing retrained.
    from ganzoo.evaluation import Scorer

    again = Scorer("mnist5k", "classifier", progress=False).prepared
    assert again.weights_path == prepared.weights_path and again.weights_sha256 == prepared.weights_sha256


def test_classifier_training_is_deterministic(monkeypatch):
    train, test = load_split("mnist5k", "train"), load_split("mnist5k", "test")
    small = type(train)(train.images[:512], train.labels[:512], train.info)
    monkeypatch.setitem(classifier.TRAINING, "max_steps", 8)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, meta_a = classifier.train_classifier(small, test, 1, 10)
    after = torch.rand(3)
    b, meta_b = classifier.train_classifier(small, test, 1, 10)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta_a["accuracy"] == meta_b["accuracy"] and meta_a["steps"] == 8
    assert torch.equal(before, after)  # the caller's random stream is untouched


def test_classifier_cache_key_follows_dataset_and_config(monkeypatch):
    from ganzoo import registry
    from ganzoo.specs import ExtractorRequest

    spec = registry.dataset("mnist5k")
    load = lambda split: load_split("mnist5k", split)  # noqa: E731
    request = ExtractorRequest(spec, load)
    train, test = load("train"), load("test")
    key = classifier.cache_key(request, train, test)
    assert classifier.cache_key(request, train, test) == key
    monkeypatch.setitem(classifier.TRAINING, "epochs", 99)
    assert classifier.cache_key(request, train, test) != key
    monkeypatch.undo()
    other = type(train)(train.images[:100], train.labels[:100], {**train.info, "count": 100})
    assert classifier.cache_key(request, other, test) != key


def test_a_corrupt_cached_classifier_is_rebuilt_not_trusted(reference_classifier, tmp_path, monkeypatch, capsys):
    # Point the cache at a copy, damage it, and check it is replaced (a tiny training run keeps this fast).
    monkeypatch.setenv("GANZOO_CACHE", str(tmp_path))
    monkeypatch.setitem(classifier.TRAINING, "max_steps", 4)
    from ganzoo.evaluation import Scorer

    first = Scorer("mnist5k", "classifier", progress=False).prepared
    Path(first.weights_path).write_bytes(b"not a checkpoint")
    again = Scorer("mnist5k", "classifier", progress=False).prepared
    assert "rebuilding the cached classifier" in capsys.readouterr().err
    assert again.weights_sha256 == first.weights_sha256  # deterministic: the same weights come back


def test_classifier_needs_labels(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(folder / f"{i}.png")
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(GanzooError, match="extractor 'classifier' needs"):
        evaluate_images(images, "imagefolder", "classifier", dataset_options={"folder": str(folder), "size": 16})


# ---- inception-v3-compat: weights from disk only, loaded safely first ----


def write_random_inception_weights(path: Path) -> Path:
    """A state dict with the keys and shapes torch-fidelity's Inception expects and random values.

    Like the official file it has no BatchNorm step counters. Values are scaled so activations stay finite:
    He-style convolution weights, positive running variances.
    """
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in inception.expected_shapes().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("bn.weight"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / OFFICIAL)


def test_expected_inception_layout():
    shapes = inception.expected_shapes()
    assert shapes["fc.weight"] == (1008, 2048) and shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert sum(not k.endswith("num_batches_tracked") for k in shapes) == 472


def test_inception_scores_through_the_real_loading_path(random_inception, tmp_path, monkeypatch):
    # torch's hub cache is where the weights are found without --inception-weights.
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / OFFICIAL).symlink_to(random_inception)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = load_split("mnist5k", "test").images
    # Inception runs 299x299 on the CPU at a few images a second: 4 generated vs 4 real.
    result = evaluate_images(real[10:14], "mnist5k", "inception-v3-compat", n_real=4, progress=False)
    m, p = result.metrics, result.protocol
    assert all(math.isfinite(m[k]) for k in ("is_mean", "is_std", "fid", "kid_mean", "kid_std"))
    assert "classes_covered" not in m  # Inception's 1008 ImageNet classes are not the dataset's
    assert p["extractor"] == "inception-v3-compat" and p["weights_official"] is False
    assert p["extractor_weights_sha256"] == hashlib.sha256(random_inception.read_bytes()).hexdigest()
    assert "NOT the official weights" in p["scores_are"]
    assert p["resize"].startswith("bilinear") and "299x299" in p["resize"]
    assert p["kid_subset_size"] == 4 and p["kid_subset_size_capped"] is True and p["is_splits"] == 4
    assert p["feature_dim"] == 2048 and p["feature_layers"] == "isc=logits_unbiased, fid=2048, kid=2048"


def test_missing_inception_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(GanzooError) as info:
        evaluate_images(images, "mnist5k", "inception-v3-compat", progress=False)
    message = str(info.value)
    assert OFFICIAL in message and inception.WEIGHTS_URL in message
    assert "$TORCH_HOME/hub/checkpoints/" in message and "--inception-weights" in message
    assert "\n" not in message


class _RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): the kind of file that must never be loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_weights_file_carrying_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _RunsCodeWhenUnpickled(marker)}, evil)
    with pytest.raises(GanzooError, match="refusing to load Inception weights .* pickled code"):
        inception.check_weights(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "truncated or corrupt"),
    (b"\x80\x02not a torch file at all", "corrupt"),
])
def test_corrupt_weights_are_named(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(GanzooError, match=message):
        inception.check_weights(path)


def test_wrong_shaped_or_incomplete_weights_are_refused(random_inception, tmp_path):
    state = torch.load(random_inception, weights_only=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    del state["Mixed_7c.branch_pool.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(GanzooError) as info:
        inception.check_weights(wrong)
    message = str(info.value)
    assert "1 missing keys (first: Mixed_7c.branch_pool.conv.weight)" in message
    assert "1 unexpected keys (first: extra.weight)" in message
    assert "fc.weight (10, 2048) (expected (1008, 2048))" in message
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(GanzooError, match="not a state dict of tensors"):
        inception.check_weights(not_a_dict)


def test_bad_weights_through_the_cli(cli, tiny_run, tmp_path):
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "code-ran"
    torch.save({"x": _RunsCodeWhenUnpickled(marker)}, evil)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    shapes = tmp_path / "shapes.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, shapes)
    for path, message in ((evil, "pickled code"), (corrupt, "corrupt"), (shapes, "do not fit"),
                          (tmp_path / "missing.pth", "not found")):
        code, out, err = cli("eval", "--run", tiny_run.path, "--extractor", "inception-v3-compat",
                             "--inception-weights", path, "--n", "4")
        assert code == 2 and out == "", (path, err)
        assert err.startswith("ganzoo: error:") and message in err and err.count("\n") == 1, err
    assert not marker.exists()
    # A classifier entry in the JSON list of extractors, with its provenance.
    code, out, _ = cli("list", "--json")
    extractors = {e["name"]: e for e in json.loads(out)["extractor"]}
    assert {"classifier", "inception-v3-compat"} <= set(extractors)
