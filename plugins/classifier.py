"""classifier: an offline feature extractor for labelled datasets, a small LeNet-style CNN trained by ganzoo.

Standard IS/FID/KID need Inception weights that cannot be downloaded everywhere. For a labelled dataset
ganzoo instead trains a reference classifier once, deterministically, on the dataset's labelled training
split, measures its accuracy on the held-out reference split, and caches it under ganzoo.paths.cache_dir()
keyed by dataset, options, training config and this file's code. Its logits feed IS, its 128-unit penultimate
layer feeds FID and KID. Such scores are "classifier IS/FID/KID": they rank models on one dataset, but are
not comparable with Inception-based numbers, and every score records the classifier's accuracy.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganzoo import caches
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.paths import cache_dir
from ganzoo.specs import LOGITS_SINK, ExtractorRequest, ExtractorSpec, ImageData, PreparedExtractor

NAME = "classifier"
FIDELITY_NAME = "ganzoo-classifier"  # the name registered with torch-fidelity
FORMAT = "ganzoo-reference-classifier"
FEATURES = 128  # width of the penultimate layer, the FID/KID features
# Everything that changes the trained weights. Part of the cache key, with this file's code.
TRAINING = {"seed": 0, "epochs": 12, "max_steps": 3000, "batch_size": 64, "max_lr": 3e-3, "shift_px": 2}


class LeNet(nn.Module):
    """conv5x5(32) - maxpool - conv5x5(64) - maxpool to 5x5 - fc(128) - fc(classes); square images >= 10 px."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 5 * 5, FEATURES)
        self.fc2 = nn.Linear(FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: floats in [0, 1], (B, C, H, W) -> (logits, penultimate features)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_max_pool2d(F.relu(self.conv2(x)), 5)  # = maxpool 2 at 28x28; any size maps to 5x5
        features = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(features), features


# ---- the torch-fidelity side ----


_fidelity_class = None


def fidelity_class():
    """The torch-fidelity subclass, built on first use so that importing this plugin leaves torch-fidelity alone."""
    global _fidelity_class
    if _fidelity_class is None:
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase

        _fidelity_class = _make_fidelity_class(FeatureExtractorBase)
    return _fidelity_class


def _make_fidelity_class(base):
    class ClassifierFeatureExtractor(base):
        """torch-fidelity feature extractor around a cached reference classifier (uint8 Bx3xHxW in)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError("the ganzoo classifier extractor needs feature_extractor_weights_path")
            payload = load_classifier(Path(feature_extractor_weights_path))
            meta = payload["meta"]
            self.channels = int(meta["channels"])
            self.net = LeNet(self.channels, int(meta["num_classes"]))
            self.net.load_state_dict(payload["state_dict"])
            self.sink = kwargs.get(LOGITS_SINK)  # evaluation's list for the class logits (mode coverage)
            self.requires_grad_(False)
            self.eval()

        def forward(self, x):
            if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
                raise ValueError(f"expecting uint8 Bx3xHxW images, got {getattr(x, 'dtype', type(x))} "
                                 f"{tuple(getattr(x, 'shape', ()))}")
            # Grayscale arrives tiled to 3 identical channels; the classifier reads the first one.
            x = x[:, :1] if self.channels == 1 else x
            logits, features = self.net(x.float() / 255.0)
            if self.sink is not None:
                self.sink.append(logits.detach().cpu())
            out = {"logits": logits, "features": features}
            return tuple(out[name] for name in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "logits", "features"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    return ClassifierFeatureExtractor


def register_with_fidelity() -> None:
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = fidelity_class()
    registered = FEATURE_EXTRACTORS_REGISTRY.get(FIDELITY_NAME)
    if registered is None:
        register_feature_extractor(FIDELITY_NAME, cls)
    elif registered is not cls:
        raise GanzooError(f"another feature extractor is registered with torch-fidelity as '{FIDELITY_NAME}'")


# ---- training and the on-disk cache ----


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """This file's code as first read by this process (the code that trains), so editing it retrains."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def cache_key(request: ExtractorRequest, train: ImageData, held_out: Optional[ImageData]) -> str:
    ds = request.dataset
    identity = {
        "dataset": ds.name, "options": dict(request.dataset_options), "shape": [ds.shape.channels, ds.shape.size],
        "num_classes": ds.num_classes, "train_split": ds.train_split, "train_info": train.info,
        "train_count": len(train.images), "held_out_split": ds.reference_split,
        "held_out_info": held_out.info if held_out is not None else None,
        "training": TRAINING, "code": _code_version(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def classifier_path(dataset: str, key: str) -> Path:
    return cache_dir() / "classifiers" / f"{dataset}-{key[:16]}.pt"


def weights_sha256(state: dict) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, values), not of the file, whose metadata holds
    a timestamp: the same training gives the same hash on every machine that reproduces it bit for bit."""
    return caches.content_sha256(state)


def _entry_sha256(payload: dict) -> str:
    """What a cache entry records about itself: its weights, key and metadata, checked on every load."""
    return caches.content_sha256(payload["state_dict"], {"key": payload.get("key"), "meta": payload.get("meta")})


def load_classifier(path: Path) -> dict[str, Any]:
    """A cached classifier, loaded without executing pickled code and checked against its recorded SHA-256."""
    try:
        payload = caches.load_payload(path)
    except ValueError as exc:
        raise GanzooError(f"refusing to load classifier {path}: {exc}") from None
    if payload.get("format") != FORMAT or not isinstance(payload.get("state_dict"), dict):
        raise GanzooError(f"{path} is not a ganzoo reference classifier")
    if payload.get("sha256") != _entry_sha256(payload):
        raise GanzooError(f"classifier {path} does not match the SHA-256 recorded in it (damaged)")
    return payload


def train_classifier(train: ImageData, held_out: Optional[ImageData], channels: int, num_classes: int
                     ) -> tuple[dict, dict]:
    """Deterministic training on the CPU from a fixed seed; returns (state_dict, metadata).

    Runs inside fork_rng so the caller's random streams (a GAN being trained) are untouched.
    """
    started = time.perf_counter()
    cfg = TRAINING
    threads = torch.get_num_threads()
    # One thread: the same floating-point reduction order on every machine, so the same weights (and on a
    # shared CPU, one thread is also faster than two fighting for cores).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            state, meta = _train(train, held_out, channels, num_classes, cfg)
    finally:
        torch.set_num_threads(threads)
    meta["train_seconds"] = round(time.perf_counter() - started, 2)
    return state, meta


def _train(train: ImageData, held_out: Optional[ImageData], channels: int, num_classes: int, cfg: dict
           ) -> tuple[dict, dict]:
    torch.manual_seed(cfg["seed"])  # the initial weights
    net = LeNet(channels, num_classes)
    g = torch.Generator().manual_seed(cfg["seed"])  # batch order and shifts
    x = train.images  # uint8; each batch becomes floats on its own (a float copy of a big split costs GBs)
    y = train.labels.long()
    per_epoch = max(1, len(x) // cfg["batch_size"])
    steps = min(cfg["epochs"] * per_epoch, cfg["max_steps"])  # large datasets: a bounded one-time cost
    opt = torch.optim.Adam(net.parameters(), lr=cfg["max_lr"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["max_lr"], total_steps=steps)
    s, size = cfg["shift_px"], x.shape[-1]
    net.train()
    for step in range(steps):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(len(x), generator=g)
        idx = order[position * cfg["batch_size"]:(position + 1) * cfg["batch_size"]]
        # Random shifts of up to shift_px pixels: cheap augmentation that helps with only 400 digits a class.
        dx, dy = torch.randint(0, 2 * s + 1, (2,), generator=g).tolist()
        batch = F.pad(x[idx].float().div_(255.0), (s, s, s, s))[:, :, dy:dy + size, dx:dx + size]
        loss = F.cross_entropy(net(batch)[0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    accuracy = None
    if held_out is not None and held_out.labels is not None:
        hits = 0
        with torch.no_grad():
            for i in range(0, len(held_out.images), 1000):
                logits = net(held_out.images[i:i + 1000].float() / 255.0)[0]
                hits += int((logits.argmax(1) == held_out.labels[i:i + 1000]).sum())
        accuracy = hits / len(held_out.images)
    meta = {"channels": channels, "num_classes": num_classes, "size": int(size), "steps": steps,
            "train_images": len(x), "held_out_images": len(held_out.images) if held_out is not None else 0,
            "accuracy": accuracy, "training": dict(cfg), "threads": 1, "torch": str(torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return net.state_dict(), meta


MIN_SIZE = 10  # LeNet's second 5x5 convolution needs a 5x5 map after the first pooling


@torch.no_grad()
def classify(network: LeNet, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, classes) logits of uint8 N x C x H x W images, on the CPU, in batches (what class-coverage and the
    other metrics that need the reference classifier call)."""
    chunks = [network(images[i:i + batch_size].float() / 255.0)[0] for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, network.fc2.out_features)


def prepare(request: ExtractorRequest) -> PreparedExtractor:
    ds = request.dataset
    if not ds.num_classes:
        raise GanzooError(f"extractor '{NAME}' needs a labelled dataset; '{ds.name}' has no classes "
                          "(use --extractor inception-v3-compat)")
    if ds.shape.size < MIN_SIZE:
        raise GanzooError(f"extractor '{NAME}' reads images of at least {MIN_SIZE}x{MIN_SIZE}; '{ds.name}' has "
                          f"{ds.shape.size}x{ds.shape.size} (use --extractor inception-v3-compat, which resizes)")
    train = request.load(ds.train_split)
    if train.labels is None:
        raise GanzooError(f"extractor '{NAME}' needs labels, but dataset '{ds.name}' split '{ds.train_split}' "
                          "has none (use --extractor inception-v3-compat)")
    held_out = request.load(ds.reference_split) if ds.reference_split != ds.train_split else None
    if held_out is not None and held_out.labels is None:
        held_out = None
    key = cache_key(request, train, held_out)
    path = classifier_path(ds.name, key)
    payload = None
    if path.is_file():
        try:
            payload = load_classifier(path)
            if payload.get("key") != key:
                payload = None
        except GanzooError as exc:  # a cache entry can always be rebuilt
            print(f"ganzoo: rebuilding the cached classifier: {exc}", file=sys.stderr)
            path.unlink(missing_ok=True)
            payload = None
    if payload is None:
        if request.progress:
            print(f"ganzoo: training the reference classifier for '{ds.name}' on {len(train.images)} "
                  f"'{ds.train_split}' images (one time; cached in {path.parent})", file=sys.stderr)
        state, meta = train_classifier(train, held_out, ds.shape.channels, ds.num_classes)
        meta.update(dataset=ds.name, options=dict(request.dataset_options), train_split=ds.train_split,
                    held_out_split=ds.reference_split if held_out is not None else None)
        payload = {"format": FORMAT, "version": 1, "key": key, "meta": meta, "state_dict": state}
        caches.save_bytes(path, {**payload, "sha256": _entry_sha256(payload)})
        if request.progress:
            acc = f"{meta['accuracy']:.4f}" if meta["accuracy"] is not None else "n/a"
            print(f"ganzoo: reference classifier trained in {meta['train_seconds']:.1f} s; held-out accuracy "
                  f"{acc}", file=sys.stderr)
    register_with_fidelity()
    meta = payload["meta"]
    network = LeNet(ds.shape.channels, ds.num_classes)
    network.load_state_dict(payload["state_dict"])
    network.requires_grad_(False).eval()
    sha256 = weights_sha256(payload["state_dict"])
    accuracy = meta.get("accuracy")
    acc_text = f"held-out accuracy {accuracy:.4f}" if accuracy is not None else "no labelled held-out split"
    return PreparedExtractor(
        fidelity_name=FIDELITY_NAME,
        weights_path=str(path),
        weights_sha256=sha256,
        feature_layers={"isc": "logits", "fid": "features", "kid": "features"},
        scores_are=(f"classifier IS/FID/KID (ganzoo reference classifier trained on {ds.name} "
                    f"'{ds.train_split}', {acc_text}; not comparable with Inception-based numbers)"),
        resize=f"none (the classifier reads {ds.shape.size}x{ds.shape.size} directly)",
        feature_dim=FEATURES,
        batch_size=500,
        num_classes=ds.num_classes,
        classify=functools.partial(classify, network),
        info={"classifier_accuracy": accuracy,
              "classifier_trained_on": f"{ds.name} '{ds.train_split}' ({meta['train_images']} images)",
              "classifier_accuracy_on": (f"{ds.name} '{meta['held_out_split']}' ({meta['held_out_images']} images)"
                                         if meta.get("held_out_split") else None),
              "classifier_train_seconds": meta["train_seconds"]},
    )


@hookimpl
def ganzoo_feature_extractors():
    return [ExtractorSpec(
        name=NAME,
        description="offline reference classifier (LeNet-style CNN trained on the dataset's labels, cached); "
                    "classifier IS/FID/KID, not comparable with Inception numbers",
        prepare=prepare,
        paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition (LeNet)",
        needs_labels=True,
    )]
