#!/usr/bin/env bash
# Issue 14's one GPU call: training-step modes side by side, and a first gym.make on Fashion-MNIST.
#
#   OUT=/some/folder bash benchmarks/device_issue14.sh          # one H200, about 175 s wall
#   OUT=/tmp/x ISSUE14_SMALL=1 bash benchmarks/device_issue14.sh  # the same logic on the CPU, tiny sizes
#
# Run from the repository root after the dependencies' wheels are installed; Fashion-MNIST's idx
# files are read from .data/fashion-mnist/. Two jobs share the device:
#  (b) a first gym.make("HAQ-MobileNetV2-v0", dataset="fashion-mnist", device="cuda") with an empty
#      HAQ_GYM_CACHE (the float model is pretrained on the device), timed by benchmarks/env_speed.py;
#  (a) benchmarks/gpu_throughput.py: float and LSQ W4A4 training at batch 128 and 256 through every
#      train-step mode. It prepares (compiles, captures) its settings while (b) runs, waits for (b)
#      to finish and only then times them, in turns, so (a)'s numbers never share the GPU.
# Everything is written under $OUT as it goes (partial JSON survives a timeout). Hard wall limit:
# ISSUE14_WALL_S (default 178 s); each job is stopped at its own deadline inside it.
set -u
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WALL=${ISSUE14_WALL_S:-178}
SCRATCH=$(mktemp -d)
DONE_FLAG="$SCRATCH/first_make.done"

if [ "${ISSUE14_SMALL:-0}" = 1 ]; then
  # Same commands, CPU and tiny sizes: checks the script's logic, measures nothing.
  DEVICE=cpu
  BATCHES="4 8"
  STEPS=5
  MODES="plain graph"
  PREPARE_S=${ISSUE14_PREPARE_S:-100} WAIT_UNTIL_S=150 TIME_LIMIT_S=170 FIRST_MAKE_S=150 WALL=${ISSUE14_WALL_S:-300}
  DATA="$SCRATCH/fashion-mnist"
  "$PY" - "$DATA" <<'EOF'
import gzip, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1]); root.mkdir(parents=True)
rng = np.random.default_rng(0)
for split, n in (("train", 240), ("t10k", 60)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([0x803, n, 28, 28], ">u4").tobytes() + images.tobytes())
    with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([0x801, n], ">u4").tobytes() + labels.tobytes())
EOF
  MAKE_EXTRA="pretrain_epochs=1 val_size=40 train_size=40 calibration_size=16"
else
  DEVICE=cuda
  BATCHES="128 256"
  STEPS=40
  MODES="plain graph graph-compile compile"
  # (a): seconds after gpu_throughput.py's start (its imports take a few before): a setting still
  # compiling at PREPARE_S is dropped; timing starts when (b) is done or at WAIT_UNTIL_S, and no
  # round of turns starts after TIME_LIMIT_S. (b) is stopped FIRST_MAKE_S after it started.
  PREPARE_S=112 WAIT_UNTIL_S=122 TIME_LIMIT_S=146 FIRST_MAKE_S=125
  DATA="$PWD/.data/fashion-mnist"
  MAKE_EXTRA=""
fi

{
  echo "date: $(date -u)"
  echo "host: $(hostname), cores: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "device: $DEVICE, batches: $BATCHES, modes: $MODES, timed steps: $STEPS"
  echo "fashion-mnist folder: $DATA: $(ls "$DATA" 2>/dev/null | tr '\n' ' ')"
  "$PY" -c "import torch, gymnasium, haq_gym; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tail -1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

# (b) first gym.make with an empty cache, in the background
(
  HAQ_GYM_CACHE="$SCRATCH/cache" HAQ_GYM_THREADS=4 timeout -k 5 "$FIRST_MAKE_S" "$PY" benchmarks/env_speed.py \
    --env HAQ-MobileNetV2-v0 --warmup-episodes 1 --episodes 1 --repeats 1 --seed 0 \
    --env-kwargs dataset=fashion-mnist "data_root=$DATA" "device=$DEVICE" $MAKE_EXTRA \
    > "$OUT/first_make.txt" 2> "$OUT/first_make.log"
  echo "exit status $? after $SECONDS s of the script (124: stopped at ${FIRST_MAKE_S} s)" >> "$OUT/first_make.txt"
  touch "$DONE_FLAG"
) &
MAKE_PID=$!

# (a) training-step modes side by side; timed once (b) is done
TORCHINDUCTOR_COMPILE_THREADS=12 timeout -k 5 $((WALL - SECONDS - 8)) "$PY" benchmarks/gpu_throughput.py \
  --device "$DEVICE" --skip-episodes --skip-ddpg --sb3 --batch-sizes $BATCHES --train-step-modes $MODES \
  --train-steps "$STEPS" --seed 0 --prepare-budget-s "$PREPARE_S" --wait-for "$DONE_FLAG" \
  --wait-until-s "$WAIT_UNTIL_S" --time-limit-s "$TIME_LIMIT_S" --output "$OUT/gpu_throughput.json" \
  > "$OUT/gpu_throughput.txt" 2> "$OUT/gpu_throughput.log"
echo "gpu_throughput.py exit status $? after $SECONDS s" >> "$OUT/gpu_throughput.txt"

wait "$MAKE_PID"
echo "script done after $SECONDS s" | tee "$OUT/done.txt"
rm -rf "$SCRATCH"
tail -n 4 "$OUT/first_make.txt" "$OUT/gpu_throughput.txt"
