"""Precision and recall (Kynkaanniemi et al. 2019) from the same pass as FID, on constructed sets of images."""
import pytest
import torch

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ExtractorSpec, ImageData, ImageShape, PreparedExtractor

from ganzoo.data import load_split
from ganzoo.evaluation import Scorer


@pytest.fixture(scope="module")
def scorer(reference_classifier):
    return Scorer("mnist5k", "classifier", device="cpu", progress=False)


@pytest.fixture(scope="module")
def train_images():
    return load_split("mnist5k", "train").images


def test_real_images_are_precise_and_recall_more_than_a_collapsed_set(scorer, train_images):
    real = scorer.score(train_images[:1000]).metrics
    collapsed = scorer.score(train_images[:5].repeat(200, 1, 1, 1)).metrics
    assert real["precision"] > 0.8
    # (real training images recall less than 1: the classifier was trained on them, so their features cluster
    # more tightly than the held-out reference's)
    assert real["recall"] > collapsed["recall"] + 0.2


def test_collapsed_generator_is_precise_but_recalls_little(scorer, train_images):
    """A generator that draws only a handful of real digits: each lies on the real manifold (precision), but
    the real data's variety is not covered (recall)."""
    few = train_images[:5].repeat(200, 1, 1, 1)
    result = scorer.score(few)
    assert result.metrics["precision"] > 0.8
    assert result.metrics["recall"] < 0.1
    assert "3-NN on the FID features" in result.protocol["prc"]


def points(n: int, seed: int, spread: float = 12.0, centre: float = 128.0) -> torch.Tensor:
    """Images whose first two pixels are a point of a 2-d Gaussian; the rest is black."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.randn(n, 2, generator=g) * spread + centre).round().clamp(0, 255)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, 0, 0, :2] = xy.to(torch.uint8)
    return images


def _points_extractor_class():
    """A torch-fidelity extractor whose features are those two pixels: constructed 2-d features."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class Points(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):  # torch-fidelity passes all its settings along
            super().__init__(name, features_list)

        def forward(self, x):
            features = x[:, 0, 0, :2].float()
            logits = torch.cat([features, -features], dim=1)
            return tuple({"logits": logits, "features": features}[n] for n in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "logits", "features"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits" if metric == "isc" else "features"

        @staticmethod
        def can_be_compiled():
            return False

    register_feature_extractor("ganzoo-test-points", Points)


class PointsPlugin:
    """A dataset of Gaussian points (as images) and an extractor that reads the points back."""

    @hookimpl
    def ganzoo_feature_extractors(self):
        def prepare(request):
            _points_extractor_class()
            return PreparedExtractor(fidelity_name="ganzoo-test-points", weights_path="", weights_sha256="p" * 64,
                                     feature_layers={"isc": "logits", "fid": "features", "kid": "features"},
                                     scores_are="point scores", resize="none", feature_dim=2)

        return [ExtractorSpec(name="points", description="the two pixels", prepare=prepare)]

    @hookimpl
    def ganzoo_datasets(self):
        return [DatasetSpec(name="points", description="2-d Gaussian points", shape=ImageShape(1, 28),
                            load=lambda split, root=None, download=False: ImageData(
                                points(2000 if split == "train" else 1000, 0 if split == "train" else 1)))]


def test_on_constructed_features_collapse_and_noise_behave_as_expected(register_plugin):
    register_plugin(PointsPlugin(), "points-plugin")
    scorer = Scorer("points", "points", device="cpu", progress=False, cache=False)
    fresh = scorer.score(points(1000, seed=2)).metrics  # another sample of the same distribution
    collapsed = scorer.score(points(1000, seed=3, spread=1.0)).metrics  # all near the mode
    noise = scorer.score(torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8,
                                       generator=torch.Generator().manual_seed(4))).metrics
    assert fresh["precision"] > 0.9 and fresh["recall"] > 0.9
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.2  # sharp but few modes
    assert noise["precision"] < 0.2 and noise["recall"] > 0.9  # diverse, mostly off the data
