#!/usr/bin/env bash
# Issue 20's GPU checks as ONE prepared command, for a session that is lent a device machine (15 minutes of
# device time in all, a fresh bare machine per lease, no network there). Two steps:
#
#   here, once per session:   bash scripts/device_check.sh --prepare
#       copies what the device image lacks into .devsite/ (git-ignored): vzoo's pinned timm and natten (pure
#       Python, from .venv) and the official BiFormer checkout for the routing-attention model rows
#       (OFFICIAL_ROOT, default /work/official; absent -> those rows are left out).
#   on the device:             run(command="bash scripts/device_check.sh", carry=[".devsite"], timeout_s=560)
#       installs vzoo (editable, no deps) into the image's python3, runs the CUDA tests of every Triton op, then
#       the GPU benchmarks in the order issue 20 ranks them, each under its own time limit so a slow step
#       cannot eat the next; everything lands under $OUT (tests.log, bench.log, benchmarks.md: a copy of
#       docs/benchmarks.md with the new sections, to copy back after reading it).
#
# STEPS=tests,na,window,bra (default: all) picks the steps.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    rm -rf .devsite && mkdir -p .devsite/site
    for pkg in timm natten; do cp -r "$site/$pkg" "$site"/"$pkg"-*.dist-info .devsite/site/; done
    root=${OFFICIAL_ROOT:-/work/official}
    [ -d "$root/BiFormer" ] && cp -r "$root/BiFormer" .devsite/biformer
    grep -qx '/.devsite/' .git/info/exclude 2>/dev/null || echo '/.devsite/' >> .git/info/exclude
    du -sh .devsite
    exit 0
fi

OUT=${OUT:-/tmp/vzoo_device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.devsite/site${PYTHONPATH:+:$PYTHONPATH}"
PY=python3
STEPS=${STEPS:-tests,na,window,bra}
want() { case ",$STEPS," in *",$1,"*) return 0;; esac; return 1; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
} 2>&1 | tee "$OUT/env.txt"
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
    || { echo "vzoo install failed (see install.log)"; exit 1; }
cp docs/benchmarks.md "$OUT/benchmarks.md"
md=(--markdown "$OUT/benchmarks.md")

if want tests; then  # the CUDA tests of every Triton op (the interpreter tests run in CI, not here)
    timeout 150 $PY -m pytest -q -p no:cacheprovider -k "cuda" tests/test_neighborhood_attention_triton.py \
        tests/test_routing_attention_triton.py tests/test_na_split.py tests/test_sparse_attention.py \
        tests/test_custom_ops.py 2>&1 | tee "$OUT/tests.log" | tail -5
fi
bench() {  # bench SECONDS SUITE ARGS...: one suite under a time limit; rows print as they finish
    local limit=$1; shift
    echo "== $* (limit ${limit}s)" | tee -a "$OUT/bench.log"
    timeout "$limit" $PY tools/benchmark.py "$@" "${md[@]}" 2>&1 | tee -a "$OUT/bench.log" | tail -3
}
if want na; then  # goals: NAT-T / DiNAT-T stage shapes, bf16, fwd and fwd+bwd, vs natten and flash SDPA
    bench 150 na --device cuda --dtype bfloat16 --cases goal nat_tiny --bwd --iters 10 --section na-gpu-bf16
    bench 90 na --device cuda --dtype bfloat16 --cases dinat --bwd --iters 10 --section na-gpu-bf16-dinat
fi
if want window; then  # window attention with rpb (HAT/Swin/MOAT shapes): backward vs torch
    bench 60 na --device cuda --dtype bfloat16 --cases windows --bwd --iters 10 --section na-gpu-bf16-windows
fi
if want bra; then  # routing attention at the 224 classification shapes (+ whole BiFormer-T vs official)
    official=(); [ -d .devsite/biformer ] && official=(--official-src .devsite/biformer)
    bench 120 bra --device cuda --dtype bfloat16 --cases cls224 --bwd --iters 10 "${official[@]}" \
        --section bra-gpu-bf16
fi
echo "done: $(ls "$OUT")"
