"""inception-v3-compat: torch-fidelity's port of the TensorFlow Inception v3 behind the standard IS/FID/KID.

Scores computed with it are comparable with published numbers (at equal sample counts). Its weights,
``weights-inception-2015-12-05-6726825d.pth``, are never downloaded at run time: they are read from torch's hub
cache ($TORCH_HOME/hub/checkpoints/) or from an explicit path (--inception-weights). torch-fidelity unpickles
that file with ``weights_only=False``, so ganzoo first loads it with ``weights_only=True`` (no code can run)
and checks every key and shape against torch-fidelity's own network before handing the path over.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ExtractorRequest, ExtractorSpec, PreparedExtractor

NAME = "inception-v3-compat"  # the name torch-fidelity registers it under, too
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
OFFICIAL_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its SHA-256 prefix
FEATURE_LAYERS = {"isc": "logits_unbiased", "fid": "2048", "kid": "2048"}  # torch-fidelity's defaults
# The official file predates BatchNorm's step counter; torch fills it in on load, so it may be absent.
OPTIONAL_SUFFIX = ".num_batches_tracked"


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of torch-fidelity's FeatureExtractorInceptionV3 with its shape.

    Taken from torch-fidelity's class itself (built on the meta device, with its weight loading skipped), so
    the check follows whatever layout the installed torch-fidelity expects.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # build the layers, load nothing
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        skeleton = _Skeleton(NAME, [FEATURE_LAYERS["fid"]], feature_extractor_weights_path=empty)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def check_weights(path: Path) -> str:
    """Load the file without executing pickled code and compare it with the network; returns its SHA-256."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GanzooError(f"cannot read Inception weights {path}: {exc.strerror or exc}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise GanzooError(f"refusing to load Inception weights {path}: the file carries pickled code or "
                              "objects other than tensors (ganzoo loads weights with weights_only=True)") from None
        raise GanzooError(f"Inception weights {path} are corrupt: {_first_line(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise GanzooError(f"Inception weights {path} are truncated or corrupt: {_first_line(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GanzooError(f"Inception weights {path} are not a state dict of tensors "
                          f"(got {type(state).__name__}); expected the file {WEIGHTS_FILE}")
    expected = expected_shapes()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (first: {wrong[0]})")
    if problems:
        raise GanzooError(f"Inception weights {path} do not fit torch-fidelity's Inception v3: "
                          f"{'; '.join(problems)}")
    return sha256


def prepare(request: ExtractorRequest) -> PreparedExtractor:
    if request.weights_path:
        path = Path(request.weights_path).expanduser()
        if not path.is_file():
            raise GanzooError(f"Inception weights not found at {path} (given with --inception-weights)")
    else:
        path = default_weights_path()
        if not path.is_file():
            raise GanzooError(
                f"Inception weights {WEIGHTS_FILE} not found in {path.parent} and ganzoo does not download at run "
                f"time; fetch it from {WEIGHTS_URL} and either put it in $TORCH_HOME/hub/checkpoints/ "
                f"(here: {path.parent}) or pass --inception-weights PATH (inception_weights= in Python)")
    sha256 = check_weights(path)
    official = sha256.startswith(OFFICIAL_SHA256_PREFIX)
    return PreparedExtractor(
        fidelity_name=NAME,
        weights_path=str(path),
        weights_sha256=sha256,
        feature_layers=dict(FEATURE_LAYERS),
        scores_are=("Inception IS/FID/KID (torch-fidelity inception-v3-compat"
                    + ("" if official else "; NOT the official weights, so not comparable with published numbers")
                    + ")"),
        resize="bilinear (TensorFlow 1.x compatible) to 299x299 inside the extractor",
        feature_dim=2048,
        batch_size=32,  # 299x299 activations: larger batches only cost memory on a CPU
        info={"weights_official": official, "weights_file": str(path)},
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@hookimpl
def ganzoo_feature_extractors():
    return [ExtractorSpec(
        name=NAME,
        description="standard Inception v3 (torch-fidelity, TF-compatible); needs its weights file, no download",
        prepare=prepare,
        paper="Szegedy et al. 2016 (arXiv:1512.00567); IS: Salimans et al. 2016; FID: Heusel et al. 2017; "
              "KID: Binkowski et al. 2018",
    )]
