"""CPU/GPU training speed of ganzoo's own loop, per architecture, from the per-step log.

    python benchmarks/train_speed.py [--steps 600] [--archs mlp,dcgan] [--device auto]

Images/second counts real images seen by the discriminator (steps x batch). The first 10% of steps are
dropped as warm-up; the rest is timed from the wall-clock column of log.csv.
"""
import argparse
import platform
import tempfile

import torch

import ganzoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--archs", default="mlp,dcgan")
    parser.add_argument("--variant", default="vanilla")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for arch in args.archs.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            run = ganzoo.train(variant=args.variant, arch=arch, steps=args.steps, device=args.device,
                               out=f"{tmp}/run", progress=False)
            log = run.read_log()
            warm = len(log) // 10
            seconds = log["time_s"].iloc[-1] - log["time_s"].iloc[warm - 1]
            rate = (len(log) - warm) * run.config.batch_size / seconds
            print(f"{arch:6s} {args.variant}: {rate:8.0f} img/s  ({len(log) - warm} steps x batch "
                  f"{run.config.batch_size} in {seconds:.2f} s, device {run.stats.get('device', args.device)})")


if __name__ == "__main__":
    main()
