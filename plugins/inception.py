"""inception-v3-compat: torch-fidelity's port of the TensorFlow Inception v3 behind the standard IS/FID/KID.

Scores computed with it are comparable with published numbers (at equal sample counts). Its weights,
``weights-inception-2015-12-05-6726825d.pth``, come from an explicit path (--inception-weights) or from torch's
hub cache ($TORCH_HOME/hub/checkpoints/). When the cache lacks the file, ganzoo downloads it from torch-fidelity's
release (as torch.hub does): into a temporary name next to the cache entry, checking that its SHA-256 starts with
the prefix in the file name, then renamed into place, so a broken download never lands in the cache. The
download gives up after DOWNLOAD_TIMEOUT_S seconds without a response; when it fails (no network, DNS, HTTP
error, hash mismatch) the error says why and how to provide the file by hand. Set GANZOO_OFFLINE=1 to skip the
download attempt altogether.

torch-fidelity unpickles the weights with ``weights_only=False``, so ganzoo first loads every file, downloaded
or given, with ``weights_only=True`` (no code can run) and checks every key and shape against torch-fidelity's
own network before handing the path over.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import sys
import urllib.error
import urllib.request
import uuid
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
OFFLINE_ENV = "GANZOO_OFFLINE"  # "1": never try to download the weights
DOWNLOAD_TIMEOUT_S = 15  # per network operation (connect, each read): fail fast rather than hang offline
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


def download_url_to_file(url: str, dst: Path, hash_prefix: str, progress: bool = True,
                         timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch `url` into `dst`, checking that its SHA-256 starts with `hash_prefix` (torch.hub's convention).

    torch.hub.download_url_to_file does the same but waits on the network without a time limit; this one gives
    up after `timeout` seconds without progress. Raises URLError/HTTPError/OSError, or ValueError on a hash
    mismatch; the caller writes `dst` under a temporary name and renames it into place.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "ganzoo (torch.hub-style download)"})
    sha256 = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dst, "wb") as out:
        size = response.headers.get("Content-Length")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(size) if size else None, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=f"downloading {Path(url).name}", file=sys.stderr)
        try:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                sha256.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    digest = sha256.hexdigest()
    if not digest.startswith(hash_prefix):
        raise ValueError(f"SHA-256 mismatch: expected a hash starting {hash_prefix}, got {digest[:16]}...")


def _how_to_provide(directory: Path) -> str:
    return (f"either put it in $TORCH_HOME/hub/checkpoints/ (here: {directory}) or pass --inception-weights PATH "
            "(inception_weights= in Python)")


def _why(exc: BaseException) -> str:
    """One line on why a download failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, (TimeoutError, socket.timeout)) or (
            isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, (TimeoutError, socket.timeout))):
        return f"no response within {DOWNLOAD_TIMEOUT_S} s"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host: {reason.strerror or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return _first_line(reason) if isinstance(reason, BaseException) else str(reason)


def fetch_weights(path: Path, progress: bool = True) -> str:
    """Download the official weights to `path` (the hub cache) and return their SHA-256, or raise a one-line
    GanzooError saying why not."""
    directory = path.parent
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise GanzooError(
            f"Inception weights {WEIGHTS_FILE} not found in {directory} and {OFFLINE_ENV}=1 skips downloading it "
            f"from {WEIGHTS_URL}; {_how_to_provide(directory)}, or unset {OFFLINE_ENV} to download it")
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # No announcement: offline, the error below is the only line; online, the progress bar names the file.
        download_url_to_file(WEIGHTS_URL, partial, hash_prefix=OFFICIAL_SHA256_PREFIX, progress=progress)
        # Safe load and layout check before the file joins the cache: never cache what torch-fidelity would
        # later unpickle with weights_only=False unless it has passed the weights_only=True check.
        sha256 = check_weights(partial)
        os.replace(partial, path)  # atomic: a concurrent run sees the whole file or none
        return sha256
    except GanzooError as exc:
        raise GanzooError(f"downloaded Inception weights from {WEIGHTS_URL} were refused: {exc}") from None
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise GanzooError(
            f"Inception weights {WEIGHTS_FILE} not found in {directory}, and downloading it from {WEIGHTS_URL} "
            f"failed ({_why(exc)}); {_how_to_provide(directory)}; {OFFLINE_ENV}=1 skips the download attempt"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def prepare(request: ExtractorRequest) -> PreparedExtractor:
    sha256 = None  # set by a download, which has already checked the file
    if request.weights_path:
        path = Path(request.weights_path).expanduser()
        if not path.is_file():
            raise GanzooError(f"Inception weights not found at {path} (given with --inception-weights)")
    else:
        path = default_weights_path()
        if not path.is_file():
            sha256 = fetch_weights(path, progress=request.progress)
    sha256 = sha256 or check_weights(path)
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
        description="standard Inception v3 (torch-fidelity, TF-compatible); weights downloaded once to the torch "
                    "hub cache ($TORCH_HOME/hub/checkpoints/) or --inception-weights PATH",
        prepare=prepare,
        paper="Szegedy et al. 2016 (arXiv:1512.00567); IS: Salimans et al. 2016; FID: Heusel et al. 2017; "
              "KID: Binkowski et al. 2018",
    )]
