"""ganzoo: train GAN variants side by side and compare them with honest numbers.

The Python API mirrors the CLI: every command is one call here that returns paths, runs or DataFrames.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ganzoo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from .config import TrainConfig  # noqa: E402
from .errors import DivergedError, GanzooError  # noqa: E402
from .runs import Run, open_run  # noqa: E402
from .sampling import sample  # noqa: E402
from .training import train  # noqa: E402
from .evaluation import EvalResult, evaluate  # noqa: E402
from .bench import bench  # noqa: E402
from .leaderboard import compare, leaderboard  # noqa: E402

__all__ = ["EvalResult", "evaluate", "bench", "compare", "leaderboard", "DivergedError", "GanzooError", "Run", "TrainConfig", "open_run", "sample", "train", "__version__"]
