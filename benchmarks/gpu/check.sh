#!/usr/bin/env bash
# The prepared GPU check (issues 13 and 16, item 4): one command for the `device` tool's `run`,
# within one call of at most 10 minutes. Prepare here first, once per session:
#
#     make gpu-wheels        # the Python packages the GPU image lacks, as py3.12 wheels in .whl/
#
# then call the device tool with  carry = [".whl"]  and
#
#     command = "bash benchmarks/gpu/check.sh"      timeout_s = 540
#
# Results land in $OUT (dp_overhead.md, train.txt, log.txt) and go into benchmarks/RESULTS.md by hand,
# with the device named. Not carried (over the tool's 64 MiB): SmolLM2's 93 MB GGUF package, so the
# SmolLM2 rows need a larger transfer limit; GPT-2 shapes are built from configs (no hub weights).
#
# Locally, for a dry run of the same steps on the CPU:
#     PY=.venv/bin/python DEVICE=cpu QUICK=1 SKIP_WHEELS=1 OUT=/tmp/gpu-out bash benchmarks/gpu/check.sh
set -o pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/log.txt"; }

if [ -z "$SKIP_WHEELS" ]; then
    log "installing carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { log "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

log "environment"
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/log.txt"
import platform, torch, transformers, opacus
print("python", platform.python_version(), "torch", torch.__version__, "transformers",
      transformers.__version__, "opacus", opacus.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
PYEOF

if [ -n "$QUICK" ]; then ROUNDS="--rounds 1 --rounds-small 1 --no-small"; else ROUNDS="--rounds 5 --rounds-small 5 --batch-small 16"; fi
log "DP step / non-private step ($DEVICE)"
timeout 300 "$PY" benchmarks/dp_overhead.py --device "$DEVICE" $ROUNDS --no-smollm2 --no-write \
    2>&1 | tee "$OUT/dp_overhead.md" || log "dp_overhead failed or timed out"

log "quickstart training on $DEVICE (bf16 autocast on CUDA): target + baseline"
PRECISION=fp32; [ "$DEVICE" = "cuda" ] && PRECISION=bf16
EXTRA=""; [ -n "$QUICK" ] && EXTRA="--set data.synth_n=300 --set data.one_run_canaries=20 --set train.epochs=1"
timeout 240 "$PY" -m dpaudit train configs/quickstart.toml --name gpu --runs-dir /tmp/gpu-runs --force \
    --set train.device="$DEVICE" --set train.precision="$PRECISION" --set train.num_references=0 $EXTRA \
    2>&1 | tail -n 40 | tee "$OUT/train.txt" || log "training failed or timed out"
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/train.txt"
import json, pathlib
for m in ("target", "baseline"):
    p = pathlib.Path("/tmp/gpu-runs/gpu") / m
    if (p / "complete.json").is_file():
        done, met = json.loads((p / "complete.json").read_text()), json.loads((p / "metrics.json").read_text())
        print(m, "device", done["device"], "steps", done["steps"], "seconds", round(done["seconds"], 1),
              "s/step", round(met["seconds_per_step"], 4), "held-out ppl", round(met.get("eval_perplexity", 0), 2))
PYEOF
log "done"
