#!/usr/bin/env bash
# The real-GPU check in one call, on a Linux machine with an NVIDIA GPU, Python (torch,
# transformers, peft), no Node and no network. Carry the folder scripts/device/pack.sh built:
#   bash scripts/device/run.sh [PACKDIR]        (default out/device)
# Writes ONE file, $OUT/results.json (OUT defaults to ./out/results): the GPU, our bench report
# (matmul vs peers, ops, the 3B-width slice step, the real 3B SFT step through Dawn/Vulkan), and
# PyTorch eager + peft doing the same LoRA step on the same random-weight 3B folder, plus every
# phase's exit status, seconds and the tail of its log. Each phase has a time limit so the whole
# run stays under 8 minutes; a failed phase is recorded and the next one still runs.
#
# Environment: OUT; QUICK=1 (a CPU test of this script: toy model, torch on the CPU, quick bench);
# VK_ICD_FILENAMES (else NVIDIA's ICD json is looked up, or written for libGLX_nvidia.so.0);
# KEEP_WORK=1 keeps the scratch folder (model, unpacked binaries).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PACK=$(cd "${1:-out/device}" && pwd)
OUT=${OUT:-$PWD/out/results}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/patchwork-device.XXXXXX")
LOGS="$WORK/logs"
mkdir -p "$LOGS"
START=$(date +%s)
PHASES="$WORK/phases.jsonl"
: > "$PHASES"

# phase NAME LIMIT_S CMD...: run with a time limit, log to $LOGS/NAME.log, record rc and seconds
phase() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  echo "   rc $rc, ${dt}s"
  tail -n 3 "$LOGS/$name.log" | sed 's/^/   | /'
  python3 - "$name" "$rc" "$dt" "$limit" "$LOGS/$name.log" >> "$PHASES" <<'PY'
import json, sys
name, rc, dt, limit, log = sys.argv[1:]
with open(log, errors="replace") as f:
    tail = f.read()[-4000:]
print(json.dumps({"phase": name, "rc": int(rc), "seconds": int(dt), "limit_s": int(limit), "timed_out": int(rc) in (124, 137), "log_tail": tail}))
PY
  return $rc
}

# ---- unpack ---------------------------------------------------------------------------------
LIBDIR=$(python3 "$HERE/unpack.py" "$PACK" "$WORK") || { echo "unpack failed"; exit 1; }
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NODE="$WORK/node"
"$NODE" --version

# ---- Vulkan driver: NVIDIA's ICD (the container may mount the driver without its json) --------
if [ -z "${VK_ICD_FILENAMES:-}" ]; then
  for f in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
    [ -f "$f" ] && export VK_ICD_FILENAMES=$f && break
  done
fi
if [ -z "${VK_ICD_FILENAMES:-}" ]; then
  GLX=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0/ { print $NF; exit }')
  [ -z "$GLX" ] && GLX=$(ls /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0 /usr/lib64/libGLX_nvidia.so.0 2>/dev/null | head -1)
  if [ -n "$GLX" ]; then
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$GLX" > "$WORK/nvidia_icd.json"
    export VK_ICD_FILENAMES="$WORK/nvidia_icd.json"
  fi
fi
echo "VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-<none found>}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$WORK/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$WORK/gpu.txt"

# ---- the phases -----------------------------------------------------------------------------
MODEL="$WORK/qwen2.5-vl-3b-random"
SLICE="$WORK/qwen2.5-vl-3b-slice-random"
BENCH=("$NODE" "$WORK/bench/bench.mjs")
if [ "$QUICK" = 1 ]; then
  TDEV=cpu
  phase make_model 300 python3 "$HERE/torch_step.py" make-model "$MODEL" --tiny --device cpu
  phase ours_bench 900 "${BENCH[@]}" --quick --no-train --no-slice --peers=tfjs,jax --model "$MODEL" --model-steps 1 --json "$WORK/bench.json"
  phase torch_step 300 python3 "$HERE/torch_step.py" step "$MODEL" --out "$WORK/torch_3b.json" --steps 2 --device cpu
else
  TDEV=cuda
  export PATCHWORK_PEER_TIMEOUT_MS=60000 # a hung peer must not eat the bench phase
  phase make_model 120 python3 "$HERE/torch_step.py" make-model "$MODEL" --device cuda
  phase ours_bench 240 "${BENCH[@]}" --peers=tfjs,ort,jax --model "$MODEL" --model-steps 3 --json "$WORK/bench.json"
  phase torch_step 75 python3 "$HERE/torch_step.py" step "$MODEL" --out "$WORK/torch_3b.json" --steps 5 --device cuda
  # the same 3B-width slice our bench times (2 layers, 4 vision blocks), in PyTorch (its own random weights)
  phase torch_slice 45 bash -c "python3 '$HERE/torch_step.py' make-model '$SLICE' --layers 2 --blocks 4 --device cuda && python3 '$HERE/torch_step.py' step '$SLICE' --out '$WORK/torch_slice.json' --steps 5 --device cuda"
fi

# ---- one results file -------------------------------------------------------------------------
python3 - "$WORK" "$OUT/results.json" "$START" "$QUICK" <<'PY'
import json, os, sys, time
work, out, start, quick = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
def load(name):
    p = os.path.join(work, name)
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as e:
        return {"missing": f"{name}: {e}"}
phases = [json.loads(l) for l in open(os.path.join(work, "phases.jsonl")) if l.strip()]
res = {
    "what": "patchwork real-GPU check (scripts/device/run.sh)",
    "quick_cpu_test": quick,
    "gpu": open(os.path.join(work, "gpu.txt")).read().strip(),
    "vk_icd": os.environ.get("VK_ICD_FILENAMES"),
    "total_seconds": int(time.time()) - start,
    "phases": phases,
    "ours": load("bench.json"),
    "torch_3b": load("torch_3b.json"),
    "torch_slice": load("torch_slice.json") if not quick else None,
}
rows = res["ours"].get("rows", []) if isinstance(res["ours"], dict) else []
step = next((r for r in rows if r.get("name") == "model folder sft step"), None)
t = res["torch_3b"]
if step and isinstance(t, dict) and t.get("step_ms"):
    res["summary"] = {
        "ours_3b_step_ms": step["ours_ms"], "torch_peft_3b_step_ms": t["step_ms"],
        "ours_over_torch": round(step["ours_ms"] / t["step_ms"], 3) if step["ours_ms"] else None,
        "target_ours_over_torch_max": 2.0,
        "first_loss_ours": step.get("extra", {}).get("first_loss"), "first_loss_torch": t.get("first_loss"),
        "overhead_ratio_3b": step.get("extra", {}).get("overhead_ratio"),
    }
mm = [r for r in rows if r.get("group") == "matmul" and (r.get("extra") or {}).get("gflops")]
if mm:
    best = max(mm, key=lambda r: r["extra"]["gflops"])
    res.setdefault("summary", {})["best_matmul"] = {"name": best["name"], "shape": best["shape"], "gflops": best["extra"]["gflops"],
                                                     "note": "compare with the GPU's f32 peak (target >= 30%)"}
sl = next((r for r in rows if r.get("name") == "3B-width slice sft step"), None)
ts = res.get("torch_slice")
if sl and isinstance(ts, dict) and ts.get("step_ms"):
    res.setdefault("summary", {})["slice"] = {"ours_ms": sl["ours_ms"], "torch_peft_ms": ts["step_ms"], "overhead_ratio": (sl.get("extra") or {}).get("overhead_ratio")}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(res, f, indent=1)
os.replace(tmp, out)
print(f"wrote {out} ({os.path.getsize(out)} bytes) in {res['total_seconds']} s")
PY
[ "${KEEP_WORK:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"
