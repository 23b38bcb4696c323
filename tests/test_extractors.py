"""Feature extractors: the offline reference classifier and the download and safe loading of the standard Inception.

No test here touches the network: the Inception download is replaced by fakes (or served from localhost).
"""
import hashlib
import http.server
import json
import math
import socket
import threading
import urllib.error
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


# ---- inception-v3-compat: weights downloaded once into the hub cache (or given), loaded safely first ----

REAL_DOWNLOAD = inception.download_url_to_file


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any Inception download a test does not fake fails as it would offline."""
    def offline(url, dst, hash_prefix, progress=True, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(inception, "download_url_to_file", offline)
    monkeypatch.delenv(inception.OFFLINE_ENV, raising=False)


def fake_download(source: Path, calls: list):
    """A download that 'fetches' `source` (our random weights) and records where it wrote."""
    def download(url, dst, hash_prefix, progress=True, timeout=None):
        calls.append((url, Path(dst), hash_prefix))
        Path(dst).write_bytes(source.read_bytes())

    return download


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


def test_inception_is_downloaded_into_the_hub_cache_then_scores(random_inception, tmp_path, monkeypatch):
    # Without --inception-weights the file comes from torch's hub cache, downloaded there when missing.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []
    monkeypatch.setattr(inception, "download_url_to_file", fake_download(random_inception, calls))
    real = load_split("mnist5k", "test").images
    # Inception runs 299x299 on the CPU at a few images a second: 4 generated vs 4 real.
    result = evaluate_images(real[10:14], "mnist5k", "inception-v3-compat", n_real=4, progress=False,
                             metrics=["fidelity"])
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    cached = checkpoints / OFFICIAL
    assert [(url, hp) for url, _, hp in calls] == [(inception.WEIGHTS_URL, "6726825d")]
    assert calls[0][1].parent == checkpoints and calls[0][1] != cached  # a temporary name, renamed into place
    assert sorted(p.name for p in checkpoints.iterdir()) == [OFFICIAL]  # no partial file left
    assert cached.read_bytes() == random_inception.read_bytes()
    m, p = result.metrics, result.protocol
    assert all(math.isfinite(m[k]) for k in ("is_mean", "is_std", "fid", "kid_mean", "kid_std"))
    assert "classes_covered" not in m  # asked for fidelity alone (class coverage is its own metric)
    assert p["extractor"] == "inception-v3-compat" and p["weights_official"] is False
    assert p["extractor_weights_sha256"] == hashlib.sha256(random_inception.read_bytes()).hexdigest()
    assert "NOT the official weights" in p["scores_are"]
    assert p["resize"].startswith("bilinear") and "299x299" in p["resize"]
    assert p["kid_subset_size"] == 4 and p["kid_subset_size_capped"] is True and p["is_splits"] == 4
    assert p["feature_dim"] == 2048 and p["feature_layers"] == "isc=logits_unbiased, fid=2048, kid=2048"
    # Next time the cached file is used: no second download, even offline.
    monkeypatch.setenv(inception.OFFLINE_ENV, "1")
    again = inception.prepare(_inception_request())
    assert len(calls) == 1 and again.weights_path == str(cached)


def _inception_request(weights_path=None):
    from ganzoo import registry
    from ganzoo.specs import ExtractorRequest

    return ExtractorRequest(registry.dataset("mnist5k"), lambda split: load_split("mnist5k", split),
                            weights_path=weights_path, progress=False)


def test_failed_download_says_why_and_how_to_provide_the_weights(cli, tiny_run, tmp_path, monkeypatch):
    # The autouse fake fails like this machine does: a DNS error, at once.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, out, err = cli("eval", "--run", tiny_run.path, "--extractor", "inception-v3-compat", "--n", "4")
    assert code == 2 and out == "" and err.startswith("ganzoo: error:") and err.count("\n") == 1, err
    assert OFFICIAL in err and inception.WEIGHTS_URL in err
    assert "downloading it from" in err and "failed (cannot resolve the host: Name or service not known)" in err
    assert "$TORCH_HOME/hub/checkpoints/" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert "--inception-weights PATH" in err and "GANZOO_OFFLINE=1" in err
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())  # nothing half-written is cached


@pytest.mark.parametrize("error, why", [
    (urllib.error.HTTPError(inception.WEIGHTS_URL, 404, "Not Found", {}, None), "failed (HTTP 404 Not Found)"),
    (urllib.error.URLError(TimeoutError("timed out")), f"no response within {inception.DOWNLOAD_TIMEOUT_S} s"),
    (ConnectionRefusedError(111, "Connection refused"), "failed (Connection refused)"),
    (ValueError("SHA-256 mismatch: expected a hash starting 6726825d, got 0123"), "failed (SHA-256 mismatch"),
])
def test_each_kind_of_download_failure_is_one_line(tmp_path, monkeypatch, error, why):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def failing(url, dst, hash_prefix, progress=True, timeout=None):
        Path(dst).write_bytes(b"half a file")  # what a broken transfer leaves behind
        raise error

    monkeypatch.setattr(inception, "download_url_to_file", failing)
    with pytest.raises(GanzooError) as info:
        inception.prepare(_inception_request())
    message = str(info.value)
    assert why in message and OFFICIAL in message and inception.WEIGHTS_URL in message
    assert "--inception-weights" in message and "\n" not in message
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())


def test_offline_env_skips_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv(inception.OFFLINE_ENV, "1")
    calls = []
    monkeypatch.setattr(inception, "download_url_to_file", fake_download(tmp_path / "unused", calls))
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(GanzooError) as info:
        evaluate_images(images, "mnist5k", "inception-v3-compat", progress=False)
    message = str(info.value)
    assert calls == []
    assert OFFICIAL in message and inception.WEIGHTS_URL in message and "GANZOO_OFFLINE=1 skips" in message
    assert "$TORCH_HOME/hub/checkpoints/" in message and "--inception-weights" in message
    assert "\n" not in message


def test_a_downloaded_file_carrying_code_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"payload": _RunsCodeWhenUnpickled(marker)}, evil)
    monkeypatch.setattr(inception, "download_url_to_file", fake_download(evil, []))
    with pytest.raises(GanzooError, match="downloaded Inception weights from .* were refused: .*pickled code"):
        inception.prepare(_inception_request())
    assert not marker.exists() and not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())


class _Serve(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        if self.path == "/hang":  # accept, then say nothing: what a dead network looks like mid-transfer
            self.server.release.wait(5)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()
    server.shutdown()
    server.server_close()


def test_the_downloader_checks_the_hash_and_times_out(local_server, tmp_path):
    _Serve.body = b"some weights" * 1000
    digest = hashlib.sha256(_Serve.body).hexdigest()
    dst = tmp_path / "w.pth"
    REAL_DOWNLOAD(f"{local_server}/w.pth", dst, hash_prefix=digest[:8], progress=False)
    assert dst.read_bytes() == _Serve.body
    with pytest.raises(ValueError, match=f"expected a hash starting 00000000, got {digest[:16]}"):
        REAL_DOWNLOAD(f"{local_server}/w.pth", tmp_path / "x.pth", hash_prefix="00000000", progress=False)
    with pytest.raises(OSError) as info:
        REAL_DOWNLOAD(f"{local_server}/hang", tmp_path / "y.pth", hash_prefix="0", progress=False, timeout=0.3)
    assert "no response within" in inception._why(info.value)


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
