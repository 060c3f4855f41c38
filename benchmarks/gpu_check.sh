#!/usr/bin/env bash
# The GPU checks of issue 13 in one script (about 5-10 minutes on one GPU):
#   1. R&B / stratified wall-time ratio (benchmarks/overhead.py, interleaved, trainer=gpu);
#   2. peak GPU memory of an R&B run (torch.cuda.max_memory_allocated), DDP and FSDP;
#   3. equivalence: R&B's mixture trajectory p and eval loss of a single-GPU run equal those of
#      trainer=gpu_fsdp on the same GPU (FSDP wrapping, world size 1) and, with >= 2 GPUs,
#      of DDP and FSDP over 2 GPUs (the same global batch). fp32 (32-true) so that only the
#      distribution can make them differ; tolerance 1e-4, as on CPU (tests/integration).
# Exits non-zero when a check fails; prints PASS/FAIL per check and a summary.
#
# Usage: benchmarks/gpu_check.sh [--dry-run]
#   --dry-run  run every step on the CPU with tiny overrides (no GPU needed; what the test
#              suite runs): checks that every command composes and the comparisons work.
# Environment: RNB_GPU_CHECK_DIR (outputs; default a new temp dir), OVERHEAD_ARGS (extra
#   arguments of overhead.py, default: its --shape gptneo125m preset when it has one),
#   OVERHEAD_STEPS (default 200).
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${RNB_GPU_CHECK_DIR:-$(mktemp -d -t rnb-gpu-check-XXXX)}"
export RNB_CACHE_DIR="${RNB_CACHE_DIR:-$OUT/cache}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY="${PYTHON:-python}"
FAILED=()

if [[ $DRY == 1 ]]; then
  NGPU=2   # every branch runs, on CPU
  GPU=(trainer=cpu threads=1)
  FSDP=(trainer=fsdp_cpu trainer.devices=1)
  DDP2=(trainer=ddp_cpu)
  FSDP2=(trainer=fsdp_cpu)
  SIZE=(data.synthetic.n_train=800 data.synthetic.n_eval=160 data.eval_batch_size=80
        data.max_length=48 data.tokenizer.vocab_size=1000 model.arch.hidden_size=32
        model.arch.num_layers=1 model.arch.num_heads=2 model.arch.intermediate_size=64
        model.warmup_steps=2 balance.steps_per_round=4)
  STEPS=12; OVERHEAD_STEPS=6; OVERHEAD_WARMUP=2
  OVERHEAD_ARGS="${OVERHEAD_ARGS:-${SIZE[*]}}"
else
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [[ "$NGPU" == 0 ]]; then
    echo "gpu_check: no CUDA device visible to torch (install a CUDA torch, see README)" >&2
    exit 2
  fi
  GPU=(trainer=gpu trainer.devices=1)
  FSDP=(trainer=gpu_fsdp trainer.devices=1)
  DDP2=(trainer=gpu trainer.devices=2 trainer.strategy=ddp)
  FSDP2=(trainer=gpu_fsdp trainer.devices=2)
  SIZE=(model.arch.hidden_size=256 model.arch.num_layers=4 model.arch.num_heads=4
        model.arch.intermediate_size=1024 balance.steps_per_round=10)
  STEPS=60; OVERHEAD_STEPS="${OVERHEAD_STEPS:-200}"; OVERHEAD_WARMUP=20
  if [[ -z "${OVERHEAD_ARGS:-}" ]]; then
    if "$PY" "$HERE/overhead.py" --help | grep -q -- "--shape"; then
      OVERHEAD_ARGS="--shape gptneo125m"
    else
      OVERHEAD_ARGS="data.batch_size=8 data.max_length=256 ${SIZE[*]}"
    fi
  fi
fi
COMMON=("${SIZE[@]}" strategy=rnb logger=none trainer.enable_progress_bar=false
        trainer.max_steps=$STEPS trainer.val_check_interval=$STEPS
        checkpoint.every_n_train_steps=$STEPS)

check() {  # check NAME CMD...: run, record PASS/FAIL
  local name=$1; shift
  echo "=== $name"
  echo "+ $*"
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; FAILED+=("$name"); fi
}

# One R&B run + its peak GPU memory (max over ranks). A file, not stdin: Lightning starts the
# other ranks by re-running the script that started rank 0.
cat > "$OUT/train_peak.py" <<'EOF'
import sys
from pathlib import Path

import lightning as L
import torch

from rnb.config import compose
from rnb.train import train


class Peak(L.Callback):
    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            peak = torch.tensor(float(torch.cuda.max_memory_allocated()), device=pl_module.device)
            peak = trainer.strategy.reduce(peak, reduce_op="max")
            if trainer.is_global_zero:
                Path(sys.argv[1], "peak.txt").write_text(f"{peak.item() / 2**30:.2f} GiB\n")


out = Path(sys.argv[1])
s = train(compose("train", [*sys.argv[2:], f"output_dir={out}"]), callbacks=[Peak()])
peak = (out / "peak.txt").read_text().strip() if (out / "peak.txt").exists() else "n/a (CPU run)"
print(f"{out.name}: {s['status']}, eval_loss {s['eval_loss']:.4f}, peak GPU memory {peak}, "
      f"R&B metered {s['overhead']['wall_pct']:.2f} % of wall")
EOF

train() {  # train NAME OVERRIDES...: outputs in $OUT/NAME
  local dir="$OUT/$1"; shift
  "$PY" "$OUT/train_peak.py" "$dir" "${COMMON[@]}" "$@"
}

same() {  # same A B: the two runs' p trajectories and eval losses agree
  "$PY" - "$OUT/$1/summary.json" "$OUT/$2/summary.json" <<'EOF'
import json
import sys

import numpy as np

a, b = (json.load(open(p)) for p in sys.argv[1:])
pa = np.array([r["weights"] for r in a["weights_trajectory"]])
pb = np.array([r["weights"] for r in b["weights_trajectory"]])
moved = float(np.abs(pa - 1.0 / pa.shape[1]).max())
gap = float(np.abs(pa - pb).max()) if pa.shape == pb.shape else float("inf")
loss = abs(a["eval_loss"] - b["eval_loss"])
print(f"max |p_a - p_b| {gap:.2e} (p moved {moved:.3f} from uniform), |eval loss gap| {loss:.2e}")
sys.exit(0 if gap < 1e-4 and loss < 1e-3 and moved > 1e-3 else 1)
EOF
}

# shellcheck disable=SC2086  # OVERHEAD_ARGS is a word list on purpose
check overhead "$PY" "$HERE/overhead.py" --steps "$OVERHEAD_STEPS" --warmup "$OVERHEAD_WARMUP" \
  $OVERHEAD_ARGS "${GPU[@]}"
check single train single "${GPU[@]}" trainer.precision=32-true data.batch_size=16
check fsdp_1gpu train fsdp1 "${FSDP[@]}" trainer.precision=32-true data.batch_size=16
check fsdp_1gpu_equals_single same single fsdp1
check fsdp_bf16 train fsdp_bf16 "${FSDP[@]}" trainer.precision=bf16-mixed data.batch_size=16
if [[ "$NGPU" -ge 2 ]]; then
  check ddp_2gpu train ddp2 "${DDP2[@]}" trainer.precision=32-true data.batch_size=8
  check ddp_equals_single same single ddp2
  check fsdp_2gpu train fsdp2 "${FSDP2[@]}" trainer.precision=32-true data.batch_size=8
  check fsdp_equals_single same single fsdp2
else
  echo "SKIP ddp/fsdp over 2 GPUs: 1 GPU visible (NCCL runs one rank per GPU); the 2-process" \
    "DDP and FSDP equivalence is covered on CPU by tests/integration/test_ddp.py, test_fsdp.py"
fi

echo "outputs: $OUT"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "gpu_check: FAILED ${FAILED[*]}"
  exit 1
fi
echo "gpu_check: all checks passed"
