#!/usr/bin/env bash
# Issue 19's GPU measurements, as one script that fits one H200 window (under 10 minutes):
#   1. one real optimizer step of the LLaMA twin (task=metamath +twin=metamath) under trainer=fsdp and
#      under trainer=deepspeed (bf16-mixed, one device): works, or the exact error (docs/language.md);
#   2. python -m onelora.bench --paper-sizes --groups autocast, eager and compiled side by side, at
#      ViT-B/16 batch 32, the two LLaMA-2 7B blocks at batch 4, and ViT-B/16 batch 128 (docs/bench.md).
# Each step has its own time limit; the summary (exit status and seconds of every step) and every log
# land in OUT_DIR, the bench reports under OUT_DIR/bench_*.
#
# On the device machine, from the repository root, with the wheels it lacks carried in .whl/:
#   bash scripts/gpu_check.sh fetch-wheels            # HERE first (a machine with the package registry)
#   bash scripts/gpu_check.sh run "$OUT"              # THERE: installs .whl/ into /tmp/site, then runs
#   bash scripts/gpu_check.sh plan "$OUT"             # THERE, in a window of its own: issue 18's check of
#                                                     # mode=plan (python -m onelora.plan.measure, docs/plan.md)
# The same steps at tiny sizes on a CPU (what tests/test_gpu_check.py runs; engines as trainer=default):
#   GPU_CHECK_TINY=1 bash scripts/gpu_check.sh run /tmp/gpu_check
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
# what the device image lacks (it has torch, transformers, peft, lightning, timm, safetensors, ...):
# Hydra and its parser, and DeepSpeed with its own needs (the versions of the project's venv). Two come
# only as source: antlr4 (pure Python) and DeepSpeed (built there without its CUDA ops)
WHEELS="hydra-core==1.3.8 omegaconf==2.3.1 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions"
SDISTS="antlr4-python3-runtime==4.9.3 deepspeed==0.19.8"

fetch_wheels() {
  mkdir -p "$ROOT/.whl"
  grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.whl/' >> "$(git -C "$ROOT" rev-parse --git-common-dir)/info/exclude"
  for w in $WHEELS; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$ROOT/.whl" "$w" || { echo "could not fetch $w"; return 1; }
  done
  for w in $SDISTS; do
    "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$ROOT/.whl" "$w" || { echo "could not fetch $w"; return 1; }
  done
  ls -la "$ROOT/.whl"  # about 5 MB
}

install_wheels() {  # on the device: the carried wheels into /tmp/site, DeepSpeed built without its ops
  [ -d "$ROOT/.whl" ] || { echo "no .whl/: run 'bash scripts/gpu_check.sh fetch-wheels' first and carry .whl"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl || return 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
    "$ROOT"/.whl/antlr4-python3-runtime-*.tar.gz || return 1
  DS_BUILD_OPS=0 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
    "$ROOT"/.whl/deepspeed-*.tar.gz || echo "DeepSpeed did not install: its step will report that"
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, summarise
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name (limit $limit s): $*" | tee -a "$OUT/summary.txt"
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s$([ $rc -eq 124 ] && echo ' (time limit)')" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

run_all() {
  OUT=$(mkdir -p "$1" && cd "$1" && pwd)
  : > "$OUT/summary.txt"
  cd "$ROOT" || exit 1
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
  export ONELORA_CACHE=$OUT/cache
  if [ "$TINY" != 1 ]; then
    install_wheels || exit 1
  fi
  "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/summary.txt"
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"date {__import__('time').strftime('%Y-%m-%d %H:%M')}, python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}")
for name in ("transformers", "peft", "lightning", "hydra", "deepspeed"):
    try:
        print(f"  {name} {__import__(name).__version__}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name}: not importable ({type(err).__name__}: {err})")
EOF

  # 1. the distributed engines, one real optimizer step each on the LLaMA twin
  DATA=$OUT/data
  # the data the twin declares (conf/twin/metamath.yaml, twin.write), written as the tests write it
  PYTHONPATH=$ROOT/tests:$PYTHONPATH "$PY" -c "from pathlib import Path; from runs import write_twin_data; write_twin_data('metamath', Path('$DATA'))" \
    || { echo "== could not write the metamath twin's data (conf/twin/metamath.yaml, twin.write)" | tee -a "$OUT/summary.txt"; exit 1; }
  local common=(task=metamath +twin=metamath "paths.data_dir=$DATA" "paths.root_dir=$OUT/runs" method=onelora
                trainer.max_steps=1 trainer.enable_progress_bar=false)
  if [ "$TINY" = 1 ]; then  # no GPU: the same command through the default engine
    step engine_default 300 "$PY" run.py "${common[@]}" run_tag=_default
    step engine_compiled 300 "$PY" run.py "${common[@]}" run_tag=_compiled 'trainer.compile={backend: aot_eager}'
  else
    step engine_fsdp 75 "$PY" run.py "${common[@]}" trainer=fsdp trainer.devices=1 trainer.precision=bf16-mixed run_tag=_fsdp
    step engine_deepspeed 100 "$PY" run.py "${common[@]}" trainer=deepspeed trainer.devices=1 trainer.precision=bf16-mixed run_tag=_deepspeed
  fi

  # 2. the bench under bf16 autocast: every autocast method eager (peft's LoRA and DoRA included),
  #    BitFit and 1LoRA also compiled (the paper's listing too at ViT-B batch 32); 10 timed rounds.
  #    The limits (with the engines' and the install's) keep the whole script under 10 minutes
  local bench=("$PY" -m onelora.bench --groups autocast --compile --rounds 10)
  if [ "$TINY" = 1 ]; then
    step bench_vit_tiny 300 "${bench[@]}" --compile-methods onelora,onelora_listing --quick --models vit \
      --compile-backend aot_eager --out "$OUT/bench_vit_tiny"
  else
    step bench_vit32 140 "${bench[@]}" --compile-methods onelora,onelora_listing --paper-sizes --models vit --batch 32 --out "$OUT/bench_vit32"
    step bench_llama4 110 "${bench[@]}" --compile-methods onelora --paper-sizes --models llama --batch 4 --out "$OUT/bench_llama4"
    step bench_vit128 110 "${bench[@]}" --compile-methods onelora --paper-sizes --models vit --batch 128 --out "$OUT/bench_vit128"
  fi
  echo "== done; summary in $OUT/summary.txt" | tee -a "$OUT/summary.txt"
}

plan_check() {  # issue 18: the plan against real iterations of the paper's models (docs/plan.md), one window
  OUT=$(mkdir -p "$1" && cd "$1" && pwd)
  : > "$OUT/summary.txt"
  cd "$ROOT" || exit 1
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
  export ONELORA_CACHE=$OUT/cache
  if [ "$TINY" = 1 ]; then  # no GPU: the CPU path on a tiny twin
    step plan_measure 300 "$PY" -m onelora.plan.measure --device cpu --steps 1 --out "$OUT/plan_gpu.md" \
      --config task=cifar10 +twin=cifar10 task.batch_size=2 method=onelora
  else
    install_wheels || exit 1
    step plan_measure 540 "$PY" -m onelora.plan.measure --steps 3 --out "$OUT/plan_gpu.md"
  fi
  cat "$OUT/plan_gpu.md" 2>/dev/null
}

case "${1:-}" in
  fetch-wheels) fetch_wheels ;;
  run) run_all "${2:-gpu_check}" ;;
  plan) plan_check "${2:-plan_check}" ;;  # the plan's GPU check: python -m onelora.plan.measure
  *) echo "usage: bash scripts/gpu_check.sh fetch-wheels | run OUT_DIR | plan OUT_DIR" >&2; exit 2 ;;
esac
