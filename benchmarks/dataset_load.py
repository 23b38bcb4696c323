"""Load time and memory of each dataset plugin, through ganzoo.data.load_split (the path training uses).

    python benchmarks/dataset_load.py [--mnist-root DIR] [--cifar-root DIR] [--imagefolder DIR] [--repeats 3]

Each measurement runs in a fresh Python process (torch and ganzoo imported before the baseline), so the RSS
increase is what the loaded splits themselves cost; torchvision.datasets is imported before the baseline too
(the torchvision-backed plugins and training import it anyway) and its own cost is printed separately. Reported per dataset: wall time of the first load of the
train split and of the reference split, the time of a repeated call (the per-process cache), the resident
memory increase after both splits are loaded, the peak RSS increase during loading (a lower bound: 0 when
the imports had already peaked higher), and the bytes of the
uint8 tensors (images + labels). Times are the median over --repeats fresh processes with a warm page cache
(files just read by the previous repeat): disk speed is not what is measured.

Without --cifar-root a synthetic CIFAR-10 of the real size (5 x 10,000 train + 10,000 test, random pixels) is
written in the torchvision layout to a temporary folder, since CIFAR-10 cannot be downloaded everywhere.
Without --imagefolder, 2,000 PNGs of mixed sizes (48-160 px) are generated and loaded at size=64, RGB.
fashion-mnist is read from wherever the plugin finds it (the data root, else the Debian package).
"""
from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE = r"""
import json, resource, sys, time
import torch, ganzoo
from ganzoo import registry
from ganzoo.data import load_split

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

name, root, options = sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3])
spec = registry.dataset(name, options)
# torchvision is imported by the torchvision-backed plugins and by training anyway: measured on its own
before, t = rss(), time.perf_counter()
import torchvision.datasets
tv_s, tv_rss = time.perf_counter() - t, rss() - before
base, base_peak = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter(); train = load_split(name, spec.train_split, root, options=options)
t1 = time.perf_counter(); ref = load_split(name, spec.reference_split, root, options=options)
t2 = time.perf_counter(); load_split(name, spec.train_split, root, options=options)
t3 = time.perf_counter()
tensor_bytes = sum(t.numel() * t.element_size() for d in {id(train): train, id(ref): ref}.values()
                   for t in (d.images, d.labels) if t is not None)
print(json.dumps({"tv_import_s": tv_s, "tv_rss": tv_rss, "train_s": t1 - t0, "reference_s": t2 - t1, "cached_s": t3 - t2,
                  "rss_increase": rss() - base,
                  "peak_increase": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_peak,
                  "tensor_bytes": tensor_bytes, "train_n": len(train.images), "reference_n": len(ref.images),
                  "shape": list(train.images.shape[1:]), "splits": [spec.train_split, spec.reference_split],
                  "reader": train.info.get("reader", "")}))
"""


def synthetic_cifar(root: Path) -> Path:
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 10000).tolist(), "filenames": [f"{i}.png" for i in range(10000)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f, protocol=2)
    return root


def synthetic_imagefolder(folder: Path, n: int = 2000) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = (int(x) for x in rng.integers(48, 161, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, i % 256)], -1).astype(np.uint8)
        img = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        cls = folder / f"class{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(cls / f"{i:05d}.png")
    return folder


def measure(name: str, root: str, options: dict, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", ONE, name, root or "", json.dumps(options)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = dict(runs[-1])
    for key in ("train_s", "reference_s", "cached_s", "tv_import_s"):
        result[key] = statistics.median(r[key] for r in runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", help="data root holding MNIST/raw/ (mnist is skipped without it)")
    parser.add_argument("--cifar-root", help="data root holding cifar-10-batches-py/ (default: synthetic)")
    parser.add_argument("--imagefolder", help="a folder of images (default: 2,000 synthetic PNGs)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    import ganzoo

    print(f"ganzoo {ganzoo.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [("mnist5k", None, {})]
        if args.mnist_root:
            cases.append(("mnist", args.mnist_root, {}))
        cases.append(("fashion-mnist", None, {}))
        t = time.perf_counter()
        cifar_root = args.cifar_root or str(synthetic_cifar(tmp / "cifar"))
        if not args.cifar_root:
            print(f"(wrote a synthetic full-size CIFAR-10 layout in {time.perf_counter() - t:.1f} s)")
        cases.append(("cifar10" + ("" if args.cifar_root else " (synthetic)"), cifar_root, {}))
        t = time.perf_counter()
        folder = args.imagefolder or str(synthetic_imagefolder(tmp / "images"))
        if not args.imagefolder:
            print(f"(wrote 2,000 synthetic PNGs in {time.perf_counter() - t:.1f} s)")
        cases.append(("imagefolder", None, {"folder": folder, "size": "64", "channels": "3"}))

        print("\n| dataset | splits (train / reference) | images | shape | first load train | first load "
              "reference | cached call | RSS increase | peak RSS increase | uint8 tensors |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, root, options in cases:
            r = measure(label.split()[0], root, options, args.repeats)
            mib = 1 << 20
            print(f"| {label} | {r['splits'][0]} / {r['splits'][1]} | {r['train_n']:,} / {r['reference_n']:,} | "
                  f"{'x'.join(map(str, r['shape']))} | {r['train_s']:.2f} s | {r['reference_s']:.2f} s | "
                  f"{r['cached_s'] * 1e6:.0f} us | {r['rss_increase'] / mib:.0f} MiB | "
                  f"{r['peak_increase'] / mib:.0f} MiB | {r['tensor_bytes'] / mib:.0f} MiB |", flush=True)
        print(f"\n(not included above: importing torchvision.datasets, done first in each process, took "
              f"{r['tv_import_s']:.2f} s and {r['tv_rss'] / mib:.0f} MiB RSS)")


if __name__ == "__main__":
    main()
