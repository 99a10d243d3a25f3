#!/usr/bin/env bash
# The Compare page's GPU checks, as one script for a machine with an NVIDIA GPU:
#   1. the card (nvidia-smi) and the torch build,
#   2. the CUDA tests (CUDA graph vs eager, CPU vs CUDA parity, warm-up marking),
#   3. `python -m core compare`: CPU vs CUDA (graph) vs CUDA (eager) vs CUDA with the tutorial's DataLoader,
#   4. a small `python -m core speedup-map` (CPU, all threads, vs CUDA),
#   5. telemetry: NVML finds the run's GPU, and a CUDA run records its mean GPU use and peak memory,
#   6. a sweep on the GPU with 4 trials at once (RunManager's parallel GPU queue), its per-trial overhead.
# Each step has its share of one overall time limit; logs and JSON go to $OUT (or artifacts/gpu_check).
#
# Usage:  scripts/gpu_check.sh [LIMIT_SECONDS]      (default 480)
# Python: $GPU_VENV (default ~/.cache/mlp-lab-gpu-venv) if it works, else a fresh one from requirements.txt,
#         else any python3 that has torch, streamlit and pytest (for machines without internet access).
# Data:   full MNIST from $DATA_DIR, ./data, or ../shared/datasets (whichever holds MNIST/raw); else the
#         5,000-digit sample. On a machine without internet, copy ../shared/datasets/MNIST into ./data/
#         (git-ignored, 55 MB) and carry it along.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-480}
OUTDIR=${OUT:-artifacts/gpu_check}
mkdir -p "$OUTDIR"
deadline=$((SECONDS + LIMIT))

left() { echo $((deadline - SECONDS)); }

step() {  # step NAME SHARE_SECONDS COMMAND...: run with the smaller of its share and the time left
  local name=$1 share=$2
  shift 2
  local budget
  budget=$(left)
  [ "$share" -lt "$budget" ] && budget=$share
  if [ "$budget" -le 5 ]; then
    echo "== $name: skipped, out of time"
    return 1
  fi
  echo "== $name (limit ${budget}s)"
  local start=$SECONDS
  timeout "$budget" "$@" >"$OUTDIR/$name.out" 2>"$OUTDIR/$name.err"
  local rc=$?
  tail -n 30 "$OUTDIR/$name.err"
  echo "-- $name: exit $rc after $((SECONDS - start))s"
  return $rc
}

# -- Python ------------------------------------------------------------------------------------------
usable() { "$1" -c "import torch, streamlit, plotly, pandas, pytest" >/dev/null 2>&1; }
VENV=${GPU_VENV:-$HOME/.cache/mlp-lab-gpu-venv}
PY=""
if [ -x "$VENV/bin/python" ] && usable "$VENV/bin/python"; then
  PY=$VENV/bin/python
else
  echo "== installing requirements into $VENV"
  if python3 -m venv "$VENV" && timeout 300 "$VENV/bin/pip" install -q -r requirements.txt; then
    usable "$VENV/bin/python" && PY=$VENV/bin/python
  fi
  if [ -z "$PY" ]; then
    echo "   (could not install: no network?) looking for a Python that already has torch"
    for candidate in .venv/bin/python venv/bin/python /work/venv/bin/python python3; do
      if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then PY=$candidate; break; fi
    done
  fi
fi
[ -n "$PY" ] || { echo "no Python with torch, streamlit and pytest: cannot run the checks"; exit 2; }
echo "python: $PY"
# A Python found above may lack this project's editable install (requirements.txt's `-e .`): core and dashboard
# import from this checkout either way, in Streamlit servers and workers too.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# -- data ----------------------------------------------------------------------------------------------
for dir in "${DATA_DIR:-}" data ../shared/datasets; do
  if [ -n "$dir" ] && [ -f "$dir/MNIST/raw/train-images-idx3-ubyte" ]; then export DATA_DIR=$(cd "$dir" && pwd); break; fi
done
if [ -z "${DATA_DIR:-}" ] || [ ! -f "$DATA_DIR/MNIST/raw/train-images-idx3-ubyte" ]; then
  export DATA_DIR=$(mktemp -d)  # empty: MNIST falls back to the 5,000-digit sample
  echo "data: full MNIST not found; using the 5,000-digit sample"
else
  echo "data: full MNIST in $DATA_DIR"
fi
export RUNS_DB="$OUTDIR/runs.db"

# -- 1. the card -------------------------------------------------------------------------------------
echo "== card"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/card.txt"
else
  echo "nvidia-smi not found" | tee "$OUTDIR/card.txt"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUTDIR/card.txt"
HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
CORES=$(nproc)

# -- 2. CUDA tests -----------------------------------------------------------------------------------
step cuda_tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_compare.py -k "cuda or graph"
tail -n 5 "$OUTDIR/cuda_tests.out"

# -- 3. compare: CPU vs CUDA, graph vs eager, resident vs the tutorial's pipeline ----------------------
if [ "$HAS_CUDA" = 1 ]; then
  LEGS=(--leg "device=cpu,threads=$CORES" --leg device=cuda --leg device=cuda,graphs=off --leg device=cuda,pipeline=dataloader)
else
  echo "(no CUDA here: the compare and map steps run CPU legs only, to check the script)"
  LEGS=(--leg device=cpu,threads=1 --leg "device=cpu,threads=$CORES" --leg device=cpu,threads=1,pipeline=dataloader)
fi
step compare 200 "$PY" -m core compare --no-db --epochs 5 "${LEGS[@]}"
"$PY" - "$OUTDIR/compare.out" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if lines and lines[-1].get("type") == "summary":
    s = lines[-1]
    for leg in s["legs"]:
        med = leg["median_epoch_s"]
        print(f"  {leg['label']:<42} warm-up {leg['warmup_epoch_s'] or 0:7.3f} s  median {med or 0:7.3f} s/epoch  "
              f"speedup {leg['speedup'] or 0:6.2f}x  val {leg['final_val_acc'] or 0:.2%}  graph: {leg['graphs'] or '-'}")
    print("  " + s["parity_text"])
    print("  " + s["pipeline_text"])
EOF

# -- 4. a small speedup map --------------------------------------------------------------------------
if [ "$HAS_CUDA" = 1 ]; then MAP_LEGS=(--leg "device=cpu,threads=$CORES" --leg device=cuda); else MAP_LEGS=(); fi
step speedup_map 120 "$PY" -m core speedup-map --no-db --yes --hidden-sizes 32,512,2048 --layers 1,3 --batch-sizes 64,1024 \
  --steps 20 "${MAP_LEGS[@]}"

# -- 5. telemetry: NVML and what a CUDA run records -----------------------------------------------------
"$PY" -c "from core.runs.telemetry import GpuProbe; p = GpuProbe(0); print('  NVML:', p.read() or p.note)" 2>&1 | tail -n 3
if [ "$HAS_CUDA" = 1 ]; then
  step telemetry 60 "$PY" -m core train --no-db --epochs 3 --device cuda
  "$PY" -c "import json, sys; s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print('  run:', {k: s.get(k) for k in ('status', 'peak_rss_bytes', 'mean_cpu_percent', 'mean_gpu_percent')})" "$OUTDIR/telemetry.out"
fi
# -- 6. a sweep with parallel trials on the GPU ----------------------------------------------------------
if [ "$HAS_CUDA" = 1 ]; then
  step sweep 90 "$PY" -m core sweep --space "hidden=64..1024:log,layers=1..3,lr=0.001..1:log,batch_size=64..1024:log" \
    --trials 8 --epochs 3 --sampler random --seed 0 --device cuda --parallel 4 --db "$OUTDIR/sweep.db"
  "$PY" -c "import json, sys; s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print('  sweep:', {k: s.get(k) for k in ('status', 'counts', 'best_value', 'total_seconds', 'overhead_s', 'overhead_max_s')})" "$OUTDIR/sweep.out"
fi
echo "== done in $((SECONDS))s; logs and JSON in $OUTDIR"
