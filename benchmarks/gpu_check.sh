#!/usr/bin/env bash
# One prepared GPU check: throughput of resnet18 at batch 64/256/512 in PyTorch (fp32, AMP
# float16 and bfloat16; torch.compile off and on), Keras too if TensorFlow sees the GPU, then
# a short timed training through the real CLI on synthetic CIFAR-format data.  Every table goes
# to one results file.  Installs nothing.  Designed to finish within 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [RESULTS_FILE]          # the GPU check
#   benchmarks/gpu_check.sh --quick [RESULTS_FILE]  # a ~2-minute CPU version, to prove it works
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
RESULTS=${1:-benchmarks/gpu_check_results.txt}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
status=0

say() { echo "$*" | tee -a "$RESULTS"; }
run() {  # run a command, keep its output in the results file, remember a failure
  say "\$ $*"
  "$@" 2>&1 | tee -a "$RESULTS"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { say "(exit status $rc)"; status=1; }
}

: > "$RESULTS"
say "resnet-port gpu_check, $(date -u +%Y-%m-%dT%H:%M:%SZ), quick=$QUICK"
run "$PY" -c "import platform, torch; print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine())"
command -v nvidia-smi >/dev/null && run nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv

if [ "$QUICK" = 1 ]; then
  # CPU proof run: no precision sweep (float16 autocast on a CPU is extremely slow, and AMP is for GPUs)
  ARCH=tiny; BATCHES="16 64"; STEPS="--warmup 1 --windows 2 --steps 2"; TRAIN_N=600; EPOCHS=1; SWEEP=""
else
  ARCH=resnet18; BATCHES="64 256 512"; STEPS="--warmup 3 --windows 3 --steps 10"; TRAIN_N=20000; EPOCHS=2; SWEEP="--sweep"
fi

HAVE_TF_GPU=$("$PY" -c "import tensorflow as tf; print(int(bool(tf.config.list_physical_devices('GPU'))))" 2>/dev/null || echo 0)
for B in $BATCHES; do
  say ""
  say "== $ARCH, batch $B, PyTorch${SWEEP:+: fp32 / AMP float16 / AMP bfloat16, compile off and on} =="
  run "$PY" -m resnet_port.bench --arch "$ARCH" --batch-size "$B" --frameworks torch $SWEEP $STEPS --json "$WORK/bench_torch_$B.json"
  if [ "$HAVE_TF_GPU" = 1 ] || [ "$QUICK" = 1 ]; then
    say "== $ARCH, batch $B, Keras and PyTorch side by side, fp32 =="
    run "$PY" -m resnet_port.bench --arch "$ARCH" --batch-size "$B" $STEPS --json "$WORK/bench_both_$B.json"
  else
    say "(Keras skipped: TensorFlow is not installed here or does not see a GPU)"
  fi
done

say ""
say "== a short timed training through the real CLI: $TRAIN_N synthetic CIFAR-format images, $EPOCHS epochs =="
run "$PY" -c "from resnet_port import synthetic; synthetic.write('$WORK/data', n_train=$TRAIN_N + 1000, n_test=1000, num_classes=100)"
run "$PY" -m torch_impl.train --arch "$ARCH" --amp --epochs "$EPOCHS" --batch-size 512 --data-dir "$WORK/data" --no-verify --val-size 1000 --out "$WORK/run" --quiet
[ -f "$WORK/run/metrics.jsonl" ] && run cat "$WORK/run/metrics.jsonl"
say ""
say "done: status $status; results in $RESULTS"
exit $status
