"""Seconds to score generated images with the offline reference classifier, and its one-time training cost.

    python benchmarks/eval_speed.py [--repeats 3] [--n-fake 5000]

Runs in a fresh, temporary GANZOO_CACHE, so the classifier is trained from scratch (the one-time cost) and the
real side's features start uncached. Measured, each as the median of --repeats runs of Scorer.score() (one
torch-fidelity call: feature extraction of both sides, IS, FID, KID with 100 subsets, class coverage):

  protocol, cold   5,000 generated vs mnist5k's reference split as `ganzoo eval` uses it (1,000 test digits),
                   real features not cached (what the first evaluation against a dataset costs)
  protocol, warm   the same with the real side's features read from torch-fidelity's cache (every later call)
  5k vs 5k         5,000 generated vs 5,000 real digits (all of mnist5k: 4,000 train + 1,000 test), nothing
                   cached: the figure the issue asks for, since mnist5k's reference split holds only 1,000

Generated images come from an untrained MLP generator (speed does not depend on their quality).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-fake", type=int, default=5000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        os.environ["GANZOO_CACHE"] = cache  # before ganzoo reads it: a cold cache, a fresh classifier
        import torch

        import ganzoo
        from ganzoo import registry
        from ganzoo.data import load_split
        from ganzoo.evaluation import Scorer
        from ganzoo.sampling import generate

        print(f"ganzoo {ganzoo.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")

        started = time.perf_counter()
        scorer = Scorer("mnist5k", "classifier", device=args.device, progress=False)
        first = time.perf_counter() - started
        info = scorer.prepared.info
        print(f"reference classifier: trained in {info['classifier_train_seconds']:.1f} s "
              f"(first Scorer, data load included: {first:.1f} s), held-out accuracy "
              f"{info['classifier_accuracy']:.4f} on {info['classifier_accuracy_on']}")

        torch.manual_seed(0)
        generator = registry.architecture("mlp").build_generator(100, registry.dataset("mnist5k").shape)
        t = time.perf_counter()
        fake = generate(generator, args.n_fake, 100, seed=0)
        print(f"generating {args.n_fake} images (untrained mlp): {time.perf_counter() - t:.2f} s (not counted)")

        def timed(make_scorer, warm: bool) -> tuple[float, dict]:
            times = []
            for _ in range(args.repeats):
                s = make_scorer()
                if warm:
                    s.score(fake)  # fill the real side's cache first
                t0 = time.perf_counter()
                result = s.score(fake)
                times.append(time.perf_counter() - t0)
            return statistics.median(times), result.protocol

        all_real = torch.cat([load_split("mnist5k", "train").images, load_split("mnist5k", "test").images])
        rows = [
            ("protocol, cold", *timed(lambda: Scorer("mnist5k", device=args.device, progress=False, cache=False),
                                      warm=False)),
            ("protocol, warm", *timed(lambda: Scorer("mnist5k", device=args.device, progress=False), warm=True)),
            ("5k vs 5k", *timed(lambda: Scorer("mnist5k", device=args.device, progress=False, cache=False,
                                                reference=(all_real, "train+test")), warm=False)),
        ]
        print()
        print("| measurement | generated | real | KID subsets x size | seconds (median) |")
        print("|---|---|---|---|---|")
        for name, seconds, p in rows:
            print(f"| {name} | {p['n_fake']:,} | {p['n_real']:,} ({p['reference_split']}) | "
                  f"{p['kid_subsets']} x {p['kid_subset_size']} | {seconds:.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
