"""Data smaller than the evaluation can use: images below the classifier's size, reference splits below FID's."""
import pytest
import torch

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape


def small_dataset(name: str, size: int, n_reference: int) -> DatasetSpec:
    """Random labelled digits-like data: 200 training images, n_reference held out."""

    def load(split, root=None, download=False):
        n = 200 if split == "train" else n_reference
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
        return ImageData(images, torch.arange(n) % 10, {"source": "random"})

    return DatasetSpec(name=name, description="random test data", shape=ImageShape(1, size), load=load,
                       num_classes=10)


@pytest.fixture
def small_datasets(register_plugin):
    class Plugin:
        @hookimpl
        def ganzoo_datasets(self):
            return [small_dataset("tiny8", 8, 100), small_dataset("few16", 16, 20)]

    register_plugin(Plugin(), "small-data")


def test_classifier_refuses_images_below_its_size_in_one_line(small_datasets, cli):
    code, _, err = cli("eval", "--real", "tiny8", "--n", "50")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "extractor 'classifier' reads images of at least 10x10; 'tiny8' has 8x8" in err


def test_tiny_reference_split_is_scored_with_a_warning(small_datasets, cli):
    import json

    code, out, err = cli("eval", "--real", "few16", "--n", "50", "--json")
    assert code == 0, err
    assert "warning: only 20 reference images for 128-dimensional features" in err
    record = json.loads(out)
    assert record["protocol.reference_warning"].startswith("only 20 reference images")
