"""Training and evaluation throughput: ganzoo's training loop against the usual example-script loop, one process.

    python benchmarks/throughput.py [--archs mlp,dcgan] [--dataset mnist5k] [--device cpu|cuda] [--repeats 5]
        [--steps N] [--warmup 20] [--threads N] [--configs default "precision=bf16,channels_last=true"]
        [--eval] [--inception-weights PATH] [--bench]

Training. For each architecture, --repeats repetitions of: ganzoo.train() for --steps steps (vanilla GAN, a fresh
run from seed 0, no evaluation, checkpoint only at the end) and the reference loop for as many steps, in
alternating order, so that load from other processes hits both alike. Images/second count the real images the
discriminator sees, after the first --warmup steps of each repetition (warm-up: allocator, oneDNN/cuDNN
algorithm choice, torch.compile). Reported: the median rate of each and the median of the per-repetition
ratios ganzoo / reference.

The reference loop is written the way the popular GAN examples are (the PyTorch DCGAN example, PyTorch-GAN):
a torchvision DataLoader over the same digits with per-image ToTensor() + Normalize((0.5,), (0.5,)) transforms
(PIL images, as torchvision's MNIST dataset returns them), batch 64, shuffle, Adam (torch's default kernel),
nn.BCEWithLogitsLoss, the same model classes from the ganzoo plugins, one D step and one G step per batch, the
G step reusing the D step's fake batch, both losses read with .item() every step as those scripts print them.
Where the examples differ it takes the cheaper choice (one backward for D's two terms; no label smoothing).

Evaluation (--eval): images/second through the feature extraction of the reference classifier (uint8 in,
logits and features out, batches of the protocol's size); with --inception-weights (or a CUDA device and the
weights in torch's hub cache), through Inception too.

Bench (--bench): wall time of the whole default `ganzoo bench` in a fresh temporary folder (a subprocess).

Runs unchanged on a GPU: --device cuda (add --dataset mnist --data-root DIR for full MNIST).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import torch
from torch import nn

import ganzoo
from ganzoo import registry
from ganzoo.config import TrainConfig
from ganzoo.data import load_split, resolve_root
from ganzoo.devices import resolve_device

BATCH = 64
LATENT = 100


# ---------------------------------------------------------------------------------------------------------
# the reference loop


class PILDigits(torch.utils.data.Dataset):
    """uint8 N x C x H x W images served one PIL image at a time, as torchvision's MNIST/CIFAR datasets do."""

    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        img = self.images[i]
        pil = Image.fromarray(img[0].numpy(), mode="L") if img.shape[0] == 1 else \
            Image.fromarray(img.permute(1, 2, 0).numpy(), mode="RGB")
        return self.transform(pil), 0


def reference_loader(dataset: str, images: torch.Tensor, data_root, workers: int):
    from torchvision import datasets, transforms

    channels = images.shape[1]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * channels, (0.5,) * channels)])
    if dataset == "mnist":  # the real torchvision dataset, exactly what the examples use
        data = datasets.MNIST(resolve_root(data_root), train=True, download=False, transform=transform)
    else:
        data = PILDigits(images, transform)
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers)


def reference_loop(arch: str, shape, loader, steps: int, warmup: int, device: torch.device) -> float:
    """Images/second of the example-script loop over steps after the first `warmup`."""
    spec = registry.architecture(arch)
    torch.manual_seed(0)
    G = spec.build_generator(LATENT, shape).to(device)
    D = spec.build_discriminator(shape).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    step, seen, started = 0, 0, None
    while step < steps:
        for real, _ in loader:
            real = real.to(device)
            b = real.size(0)
            ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
            z = torch.randn(b, LATENT, device=device)
            fake = G(z)
            opt_d.zero_grad()
            d_loss = criterion(D(real)[0], ones) + criterion(D(fake.detach())[0], zeros)
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss = criterion(D(fake)[0], ones)
            g_loss.backward()
            opt_g.step()
            d_loss.item(), g_loss.item()  # the examples print both every step (this also waits for the GPU)
            step += 1
            if step == warmup:
                started = time.perf_counter()
            elif step > warmup:
                seen += b
            if step >= steps:
                break
    return seen / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------
# ganzoo


def ganzoo_loop(arch: str, dataset: str, data_root, options: dict, steps: int, warmup: int, device: str) -> float:
    """Images/second of ganzoo.train() over steps after the first `warmup`, from the per-step clock in log.csv.

    On a GPU that clock runs ahead of the device by at most a few steps (the stats flush every 100 steps waits
    for it), which is noise over windows of hundreds of steps.
    """
    with tempfile.TemporaryDirectory() as tmp:
        run = ganzoo.train(TrainConfig(variant="vanilla", arch=arch, dataset=dataset, data_root=data_root,
                                       steps=steps, checkpoint_every=steps, device=device, **options),
                           out=f"{tmp}/run", progress=False)
        clock = run.read_log()["time_s"].to_numpy()
    return (steps - warmup) * BATCH / (clock[steps - 1] - clock[warmup - 1])


def parse_config(text: str) -> dict:
    """'precision=bf16,channels_last=true' -> TrainConfig keywords (checked by TrainConfig)."""
    if text in ("", "default"):
        return {}
    options = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        field = TrainConfig.__dataclass_fields__.get(key.strip())
        if field is None:
            raise SystemExit(f"unknown TrainConfig field {key!r} in --configs {text!r}")
        if field.type in ("bool", bool):
            options[key.strip()] = value.strip().lower() in ("1", "true", "yes", "on")
        elif field.type in ("int", int):
            options[key.strip()] = int(value)
        else:
            options[key.strip()] = value.strip()
    TrainConfig(**options)  # fail now, not after minutes of measuring
    return options


def measure_training(args, device: torch.device) -> None:
    configs = [(text or "default", parse_config(text)) for text in args.configs]
    dataset = registry.dataset(args.dataset)
    images = load_split(args.dataset, dataset.train_split, args.data_root).images
    loader = reference_loader(args.dataset, images, args.data_root, args.ref_workers)
    print(f"\n## training: {args.dataset} ({len(images)} images), batch {BATCH}, vanilla GAN, {args.steps} steps "
          f"per repetition ({args.warmup} warm-up), {args.repeats} repetitions, device {device}")
    summary = []
    for arch in args.archs.split(","):
        rates: dict[str, list[float]] = {"reference": [], **{name: [] for name, _ in configs}}
        ratios: dict[str, list[float]] = {name: [] for name, _ in configs}
        first_seconds: dict[str, float] = {}
        for rep in range(args.repeats):
            order = ["reference"] + [name for name, _ in configs]
            if rep % 2:
                order.reverse()  # ABBA: drift in the machine's load favours neither side
            this = {}
            for name in order:
                started = time.perf_counter()
                if name == "reference":
                    this[name] = reference_loop(arch, dataset.shape, loader, args.steps, args.warmup, device)
                else:
                    this[name] = ganzoo_loop(arch, args.dataset, args.data_root, dict(configs)[name], args.steps,
                                             args.warmup, str(device))
                if rep == 0:
                    first_seconds[name] = time.perf_counter() - started
                rates[name].append(this[name])
            for name, _ in configs:
                ratios[name].append(this[name] / this["reference"])
            print(f"  {arch} rep {rep + 1}: " + "  ".join(f"{n} {this[n]:,.0f}" for n in order) + " img/s  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        ref = statistics.median(rates["reference"])
        summary.append((arch, "reference loop", ref, None, first_seconds["reference"]))
        for name, _ in configs:
            summary.append((arch, f"ganzoo {name}", statistics.median(rates[name]), statistics.median(ratios[name]),
                            first_seconds[name]))
    print("\n| arch | loop | images/s (median) | ratio to reference (median of reps) | first repetition, s |")
    print("|---|---|---|---|---|")
    for arch, name, rate, ratio, first in summary:
        print(f"| {arch} | {name} | {rate:,.0f} | {'' if ratio is None else f'{ratio:.2f}'} | {first:.1f} |")


# ---------------------------------------------------------------------------------------------------------
# evaluation and bench


def measure_evaluation(args, device: torch.device) -> None:
    import torch_fidelity.utils

    from ganzoo.evaluation import Scorer
    from ganzoo.sampling import generate

    extractors = ["classifier"]
    if args.inception_weights or device.type == "cuda":
        extractors.append("inception-v3-compat")
    print(f"\n## evaluation: feature extraction images/s (uint8 N x 3 x H x W in; median of {args.repeats})")
    print("| extractor | images | batch | images/s | seconds |")
    print("|---|---|---|---|---|")
    torch.manual_seed(0)
    shape = registry.dataset(args.dataset).shape
    G = registry.architecture("mlp").build_generator(LATENT, shape)
    fake = generate(G, args.eval_images, LATENT, seed=0)
    fake = fake.expand(-1, 3, -1, -1) if fake.shape[1] == 1 else fake
    for name in extractors:
        try:
            scorer = Scorer(args.dataset, name, device=str(device), inception_weights=args.inception_weights,
                            data_root=args.data_root, progress=False)
        except ganzoo.GanzooError as exc:
            print(f"| {name} | skipped: {exc} | | | |")
            continue
        p = scorer.prepared
        extractor = torch_fidelity.utils.create_feature_extractor(
            p.fidelity_name, sorted(set(p.feature_layers.values())), cuda=device.type == "cuda",
            feature_extractor_weights_path=p.weights_path, verbose=False)
        times = []
        for rep in range(args.repeats + 1):  # the first pass is warm-up
            started = time.perf_counter()
            with torch.no_grad():
                for i in range(0, len(fake), p.batch_size):
                    out = extractor(fake[i:i + p.batch_size].to(device))
                    out[0].cpu()  # torch-fidelity moves features to the CPU batch by batch too
            if rep:
                times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        print(f"| {name} | {len(fake):,} | {p.batch_size} | {len(fake) / seconds:,.0f} | {seconds:.2f} |")


def measure_bench() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()  # run folders land in the temporary folder; the classifier cache is the user's
        done = subprocess.run([sys.executable, "-m", "ganzoo", "bench", "--out", f"{tmp}/bench", "--quiet"],
                              cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    print(f"\n## default `ganzoo bench`: {seconds:.0f} s wall (exit {done.returncode})")
    if done.returncode:
        print(done.stderr[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mlp,dcgan")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="steps per repetition (default 200 on CPU, 2000 on GPU)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for both loops (0: torch's default)")
    parser.add_argument("--ref-workers", type=int, default=0, help="DataLoader workers of the reference loop")
    parser.add_argument("--configs", nargs="+", default=["default"],
                        help="ganzoo settings to measure, each 'default' or 'field=value,field=value' of TrainConfig")
    parser.add_argument("--no-train", action="store_true", help="skip the training measurement")
    parser.add_argument("--eval", action="store_true", help="measure feature extraction throughput")
    parser.add_argument("--eval-images", type=int, default=5000)
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--bench", action="store_true", help="time the whole default `ganzoo bench` (minutes)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.steps is None:
        args.steps = 2000 if device.type == "cuda" else 200
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")
    if args.threads:
        torch.set_num_threads(args.threads)

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"# ganzoo throughput, {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"ganzoo {ganzoo.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
          f"{gpu}; load average {os.getloadavg()[0]:.2f}")
    if not args.no_train:
        measure_training(args, device)
    if args.eval:
        measure_evaluation(args, device)
    if args.bench:
        measure_bench()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
