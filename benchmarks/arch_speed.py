"""CPU training speed of the convolutional architectures: images/second through ganzoo.train().

    python benchmarks/arch_speed.py [--steps 30] [--warmup 2] [--max-seconds 150] [--threads 1] [--batch 64]

Rows: dcgan at 32x32 and 64x64, dcgan with spectral_norm=true at 32x32, resnet at 32x32 and 64x64, each with
its default width, the vanilla GAN, batch 64, RGB. Data: 160 random-pixel 64x64 PNGs written to a temporary
folder and read through the `imagefolder` dataset at size 32 or 64 (pixel values do not change the work done).

Each row is one fresh ganzoo.train() run; images/second count the real images the discriminator sees per
step, timed from the per-step clock in log.csv after the first --warmup steps (oneDNN picks its kernels there).
A short probe run first measures a step so that slow rows time fewer steps: at most --steps, at least 3, and
about --max-seconds of timed steps; the table says how many steps each row timed.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import ganzoo
from ganzoo import registry
from ganzoo.config import TrainConfig
from ganzoo.specs import ImageShape

ROWS = [("dcgan", 32, {}), ("dcgan", 64, {}), ("dcgan", 32, {"spectral_norm": True}),
        ("resnet", 32, {}), ("resnet", 64, {})]


def write_images(folder: Path, n: int = 160) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def train(tmp: Path, name: str, arch: str, size: int, options: dict, steps: int, args) -> np.ndarray:
    """The per-step clock (seconds since the run started, one value per step) of a fresh run."""
    config = TrainConfig(variant="vanilla", arch=arch, dataset="imagefolder", arch_options=options,
                         dataset_options={"folder": str(tmp / "images"), "size": str(size)},
                         steps=steps, batch_size=args.batch, checkpoint_every=steps, device="cpu",
                         threads=args.threads)
    run = ganzoo.train(config, out=tmp / name, progress=False)
    return run.read_log()["time_s"].to_numpy()


def parameters(arch: str, size: int, options: dict) -> tuple[int, int]:
    spec = registry.architecture(arch, options)
    shape = ImageShape(3, size)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    return count(spec.build_generator(100, shape)), count(spec.build_discriminator(shape))


def rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.1f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="most timed steps per row (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--max-seconds", type=float, default=150, help="about this much timed time per row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (TrainConfig.threads)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    command = " ".join(["OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "(unset)"),
                        ".venv/bin/python", "benchmarks/arch_speed.py", *sys.argv[1:]])
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        write_images(tmp / "images")
        for i, (arch, size, options) in enumerate(ROWS):
            probe = train(tmp, f"probe{i}", arch, size, options, args.warmup + 1, args)
            step_s = probe[-1] - probe[-2]
            timed = int(min(args.steps, max(3, args.max_seconds // max(step_s, 1e-9))))
            clock = train(tmp, f"run{i}", arch, size, options, args.warmup + timed, args)
            seconds = clock[-1] - clock[args.warmup - 1]
            g, d = parameters(arch, size, options)
            label = ", ".join(f"{k}={v}".lower() for k, v in options.items()) or "defaults"
            rows.append((arch, label, f"{size}x{size}", f"{g / 1e6:.2f} M", f"{d / 1e6:.2f} M", timed,
                         f"{seconds / timed:.3f}", rate(timed * args.batch / seconds)))
            print(f"  {arch} {label} {size}x{size}: {timed} steps, {rows[-1][-1]} img/s", file=sys.stderr)

    width = {"dcgan": 64, "resnet": 128}
    print(f"\nCommand: `{command}`  \nCommit: {commit()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{cpu_model()}, {os.cpu_count()} CPU cores; torch {torch.__version__}, "
          f"{args.threads} torch thread(s); vanilla GAN, batch {args.batch}, RGB, latent 100, Adam (fused); "
          f"{args.warmup} warm-up steps; default widths ({', '.join(f'{k} {v}' for k, v in width.items())}); "
          f"took {time.time() - started:.0f} s.\n")
    header = ("architecture", "options", "size", "G params", "D params", "timed steps", "s/step", "images/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
