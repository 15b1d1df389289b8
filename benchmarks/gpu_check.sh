#!/usr/bin/env bash
# benchmarks/gpu_check.sh: every check of issue 11 that needs a CUDA machine, in one script
# that stays under 8 minutes (each step has its own `timeout`; they add up to 475 s).
#
# It installs nothing. On the CUDA machine (../shared/reference/gpu_machine.md, docs/gpus.md),
# from the repository root, with tdrl's dependencies brought as wheels in the git-ignored
# .whl folder, run first (one line):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1
#
# then:  bash benchmarks/gpu_check.sh     (do not set MUJOCO_GL=egl there: `import mujoco` fails)
#
# Steps, in this order, each printing its results the moment it has them:
#   0. header: date, host, GPU (nvidia-smi), python, torch/CUDA and package versions
#   1. python -m pytest -m cuda tests/test_cuda.py -v -x -k "not compiled"  (fast failures first)
#   2. python -m pytest -m cuda tests/test_cuda.py -v -k compiled         (compiled == eager)
#   3. benchmarks/qpg_updates.py --device cuda          (SAC: eager, compiled, SB3, TorchRL)
#   4. benchmarks/dqn_updates.py --device cuda          (DQN Atari: the same, bf16 if offered)
#   5. benchmarks/sampler_scaling.py --device cuda --envs pong --batch-B 32 --workers 16 15
# A step that fails or times out does not stop the later ones; the script then exits 1.
# A copy of everything printed goes to $OUT/gpu_check.log when OUT is set. The summary at the
# end lists each step's status and every "Target ..." line.
#
# CPU smoke run (no GPU; tiny budgets, agent on the CPU, the cuda tests skip):
#   DEVICE=cpu bash benchmarks/gpu_check.sh      (or: bash benchmarks/gpu_check.sh --dry-run)
# PYTHON selects the interpreter (default python3; in the smoke run .venv/bin/python when it
# exists).
set -u

cd "$(dirname "$0")/.." || exit 2
DEVICE=${DEVICE:-cuda}
for arg in "$@"; do
  case "$arg" in
    --dry-run | --cpu) DEVICE=cpu ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (--dry-run | --cpu | --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ "$DEVICE" == cpu && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
fi
export PYTHONUNBUFFERED=1

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
declare -a NAMES=() STATUS=() SECONDS_TAKEN=()
FAILED=0

# step NAME TIMEOUT_S COMMAND...: run one step under `timeout`, print and record its status.
step() {
  local name=$1 limit=$2
  shift 2
  local log="$LOGDIR/${#NAMES[@]}-$name.log" t0 rc status
  echo
  echo "=== [$((${#NAMES[@]}))] $name (limit ${limit} s): $*"
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then # a function of this script: it bounds its own commands
    "$@" 2>&1 | tee "$log"
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
  fi
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  [[ $rc -ne 0 ]] && FAILED=$((FAILED + 1))
  NAMES+=("$name")
  STATUS+=("$status")
  SECONDS_TAKEN+=($(($(date +%s) - t0)))
  echo "=== $name: $status in $(($(date +%s) - t0)) s"
}

header() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host: $(hostname); $(nproc) CPUs; device: $DEVICE"
  echo "python: $PYTHON; PYTHONPATH=${PYTHONPATH:-}"
  if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "git: $(git rev-parse --short HEAD), $(git status --short | wc -l) changed files"
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm \
      --format=csv,noheader || true
  fi
  timeout 30 "$PYTHON" - "$DEVICE" <<'PY'
import importlib
import platform
import sys

import torch

device = sys.argv[1]
print(f"Python {platform.python_version()}; torch {torch.__version__}, CUDA build "
      f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
              f"{p.multi_processor_count} SMs")
else:
    print("torch sees no CUDA device")
missing = []
for name in ("tensordict", "torchrl", "gymnasium", "mujoco", "ale_py", "stable_baselines3",
             "tdrl"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} from {module.__file__}")
    except Exception as exc:  # report every missing package, then fail the step
        missing.append(name)
        print(f"{name}: NOT IMPORTABLE: {type(exc).__name__}: {exc}")
if missing or (device != "cpu" and not torch.cuda.is_available()):
    sys.exit(1)
PY
}

run_all() {
  step header 45 header
  if [[ "$DEVICE" == cpu ]]; then
    # Smoke: the same commands with tiny budgets on the CPU; the cuda tests are skipped.
    step pytest-cuda 60 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -v -x -p no:cacheprovider
    step qpg_updates 60 "$PYTHON" benchmarks/qpg_updates.py --device cpu --budget-s 45 \
      --updates 10 --repeats 1 --warmup 2 --chunk 5 \
      --impls tdrl-sac tdrl-sac-devreplay sb3-sac torchrl-sac
    step dqn_updates 60 "$PYTHON" benchmarks/dqn_updates.py --device cpu --budget-s 45 \
      --replay-size 2000 --updates 5 --repeats 1 --warmup 2 --chunk 5 \
      --impls tdrl-dqn tdrl-dqn-devreplay sb3-dqn torchrl-dqn
    step sampler_scaling 90 "$PYTHON" benchmarks/sampler_scaling.py --device cpu --budget-s 70 \
      --envs pong --batch-B 4 --workers 1 --loops serial cpu gpu --seconds 0.5 --repeats 1
  else
    # The plumbing first (-x: the first failure ends it at once), then the compiled-vs-eager
    # tests on their own, so that a slow compile cannot hide the plumbing's results.
    step pytest-cuda 90 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -v -x -k "not compiled" \
      -p no:cacheprovider -o timeout=60
    step pytest-compiled 80 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -v -k compiled \
      -p no:cacheprovider -o timeout=60
    # The compiled variants compile in their warm-up (at most --build-timeout-s each); the
    # headline rows come first, so that a spent budget skips the least important ones.
    step qpg_updates 90 "$PYTHON" benchmarks/qpg_updates.py --device "$DEVICE" --budget-s 80 \
      --build-timeout-s 35 --updates 100 --seconds 1 --repeats 2 --warmup 30 \
      --impls tdrl-sac sb3-sac tdrl-sac-compiled-devreplay tdrl-sac-devreplay torchrl-sac \
      tdrl-sac-compiled
    step dqn_updates 80 "$PYTHON" benchmarks/dqn_updates.py --device "$DEVICE" --budget-s 70 \
      --build-timeout-s 30 --replay-size 20000 --updates 50 --seconds 1 --repeats 2 \
      --warmup 20 --impls tdrl-dqn sb3-dqn tdrl-dqn-compiled-devreplay tdrl-dqn-devreplay \
      tdrl-dqn-bf16 torchrl-dqn tdrl-dqn-compiled
    # 16 workers take 11-15 s to start; the loops the target compares come first.
    step sampler_scaling 90 "$PYTHON" benchmarks/sampler_scaling.py --device "$DEVICE" \
      --budget-s 80 --envs pong --batch-B 32 --workers 16 15 --loops gpu cpu serial \
      --seconds 3 --repeats 1
  fi

  echo
  echo "=== summary ($DEVICE)"
  local i
  for i in "${!NAMES[@]}"; do
    printf '%-16s %-28s %4s s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"
  done
  grep -h '^Target ' "$LOGDIR"/*.log 2>/dev/null || echo "(no target lines)"
  grep -h -E '^(tdrl implementations|tdrl loops) that did not run' "$LOGDIR"/*.log 2>/dev/null
  echo "gpu_check: $FAILED of ${#NAMES[@]} steps failed"
  return $((FAILED > 0))
}

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  run_all 2>&1 | tee "$OUT/gpu_check.log"
  rc=${PIPESTATUS[0]}
else
  run_all
  rc=$?
fi
rm -rf "$LOGDIR"
exit "$rc"
