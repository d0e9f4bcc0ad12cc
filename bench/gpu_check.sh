#!/usr/bin/env bash
# GPU check: the correctness checks of the CUDA paths (they gate: exit 1 when one fails) and the speed figures
# (recorded against the project's goals, never gating), in two back-to-back calls on a GPU host that has torch but
# no Ray, no Optuna and no package registry. README "GPU check" says how and when; in short, from the project root:
#
#   bash bench/gpu_check.sh --prepare   # here (CPU, registry access): Ray + Optuna + their needs as cp312 wheels in
#                                       # .devwheels/part1..N (../shared/gpu/stage-wheels.sh) and pytest in .devwheels/pytest
#   call 1, carry [".devwheels/part1", ".devwheels/pytest"]:  bash bench/gpu_check.sh --call 1
#   call 2, carry [".devwheels/part2", ".devwheels/pytest"]:  bash bench/gpu_check.sh --call 2   # at once: warm ~30 s
#   rerun only some sections:  bash bench/gpu_check.sh --only fid,sweep_bench   (same carry as their call)
#
# Sections (each with its own timeout, all within --budget seconds per call):
#   call 1: env, stage (part 1 of the wheels -> /tmp/stage), tests_noray (pytest -m "gpu and not ray"),
#           gan_step (bench/gan_step.py: numerics checks, then ours vs bare eager fp32 at batch 64 and 512),
#           gan_step_resnet (the same for the residual GAN + self-attention + ADA, ours fast path and eager)
#   call 2: env, install (last part -> wheels installed into /tmp/site), tests_ray (pytest -m "gpu and ray": Ray
#           Train GAN run, --smoke-test sweep at 0.5 GPU), sweep_bench (bench/sweep.py: aggregate img/s of one GPU
#           under the sweep vs one naive trial, per-trial overhead), fid (bench/fid.py: FID/KID vs torchmetrics)
# Output, written as each section ends: $OUT/gpu_check.json (torch, CUDA, driver, GPU, TF32 settings; per section
# status, rc, seconds, its figures; the goals), $OUT/gpu_check.log and $OUT/<section>.log ($OUT defaults to
# runs/gpu_check). Exit 0: every section run passed; 1: one failed or timed out (the summary prints the rerun
# command); 2: bad arguments; 3: no CUDA device (nothing is run).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
CALL="" ONLY="" BUDGET=${GPU_CHECK_BUDGET_S:-560}
# Beyond stage-wheels.sh's list: what Ray 2.60 core/Tune and Optuna import that the GPU host's Python (torch,
# torchvision, torchmetrics, pandas, pyarrow, scipy, matplotlib) may lack; found by importing ray, ray.tune,
# ray.train, ray.data, OptunaSearch and TuneReportCallback in a bare Python 3.12 with numpy, pandas and pyarrow only.
RAY_EXTRAS="msgpack click protobuf pyyaml requests urllib3 idna charset-normalizer certifi filelock packaging fsspec attrs tqdm
            typing_extensions"
PYTEST_WHEELS="pytest pluggy iniconfig packaging pygments"
prepare() {  # on the development machine: stage the wheels for both calls and say what to carry
  bash ../shared/gpu/stage-wheels.sh $RAY_EXTRAS || return 1
  mkdir -p .devwheels/pytest
  local w
  for w in $PYTEST_WHEELS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      -d .devwheels/pytest "$w" 2>&1 | grep -v '^WARNING' || true
  done
  ls .devwheels/pytest/*.whl >/dev/null || { echo "gpu_check: could not download the pytest wheels"; return 1; }
  local parts=(.devwheels/part*) last
  last=${parts[${#parts[@]}-1]}
  du -sh .devwheels/part* .devwheels/pytest
  if (( ${#parts[@]} != 2 )); then
    echo "gpu_check: ${#parts[@]} parts: carry each but the last with '--only stage' calls before call 2"
  fi
  echo "call 1: carry [\".devwheels/part1\", \".devwheels/pytest\"]  command: bash bench/gpu_check.sh --call 1"
  echo "call 2: carry [\"$last\", \".devwheels/pytest\"]  command: bash bench/gpu_check.sh --call 2"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare) prepare; exit $? ;;
    --call) CALL=${2:-}; shift 2 ;;
    --only) ONLY=${2:-}; shift 2 ;;
    --budget) BUDGET=${2:-}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
declare -A CALL_SECTIONS=([1]="stage tests_noray gan_step gan_step_resnet" [2]="install tests_ray sweep_bench fid")
ALL="stage tests_noray gan_step gan_step_resnet install tests_ray sweep_bench fid"
if [[ -n "$ONLY" ]]; then
  SECTIONS=""
  for s in ${ONLY//,/ }; do
    [[ " $ALL " == *" $s "* ]] || { echo "gpu_check: unknown section '$s' (sections: $ALL)" >&2; exit 2; }
  done
  for s in $ALL; do [[ ",$ONLY," == *",$s,"* ]] && SECTIONS+="$s "; done
elif [[ "$CALL" == 1 || "$CALL" == 2 ]]; then
  SECTIONS=${CALL_SECTIONS[$CALL]}
else
  echo "gpu_check: say which call (--call 1 or --call 2) or which sections (--only a,b)" >&2; usage >&2; exit 2
fi
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget takes seconds" >&2; exit 2; }

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi
OUT=${OUT:-$ROOT/runs/gpu_check}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 GPU_CHECK_OUT=$OUT GPU_CHECK_WORK=$WORK
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SITE=/tmp/site  # where the staged wheels' take.sh installs Ray and Optuna

# ---- refuse cleanly without CUDA (a CPU machine, or torch missing) -----------------------------------------------
cuda_msg=$(timeout 180 "$PY" -c '
import sys
try:
    import torch
except Exception as e:
    print(f"torch is not importable with {sys.executable} ({type(e).__name__}: {e})"); sys.exit(3)
if not torch.cuda.is_available():
    print(f"no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False)"); sys.exit(3)
print(torch.cuda.get_device_name(0))' 2>&1)
rc=$?
if [[ $rc -ne 0 ]]; then
  [[ $rc -eq 124 ]] && cuda_msg="checking for CUDA took over 180 s"
  echo "gpu_check: refusing to run: $cuda_msg. This check needs a CUDA GPU host (README 'GPU check'); nothing was run." >&2
  printf '{"refused": true, "reason": %s}\n' "$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$cuda_msg" 2>/dev/null || echo '"no CUDA"')" > "$OUT/gpu_check.json"
  rm -rf "$WORK"
  exit 3
fi
echo "gpu_check: $cuda_msg; sections: $SECTIONS; budget ${BUDGET}s; output $OUT" | tee "$OUT/gpu_check.log"

# ---- the summary JSON: env once, then one record per section ------------------------------------------------------
summary() {  # summary env | summary section NAME STATUS RC SECONDS LIMIT | summary goals
  "$PY" - "$@" <<'PYEOF'
import datetime, json, os, platform, subprocess, sys
from pathlib import Path
out, work = Path(os.environ["GPU_CHECK_OUT"]), Path(os.environ["GPU_CHECK_WORK"])
path = out / "gpu_check.json"
data = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
what = sys.argv[1]
if what == "env":
    import torch
    def smi(q):
        try:
            return subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=30).stdout.strip() or None
        except Exception:
            return None
    def git(*a):
        try:
            return subprocess.run(["git", *a], capture_output=True, text=True, timeout=10).stdout.strip() or None
        except Exception:
            return None
    p = torch.cuda.get_device_properties(0)
    data["env"] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
        "capability": f"{p.major}.{p.minor}", "gpu_memory_gib": round(p.total_memory / 2**30, 1),
        "driver": smi("driver_version"), "nvidia_smi": smi("name,driver_version,memory.total,clocks.max.sm"),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "tf32_default": {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                         "float32_matmul_precision": torch.get_float32_matmul_precision()},
        "tf32_note": "numerics checks and the FID CUDA-vs-CPU test run with TF32 off (trainables.gan.step_checks."
                     "strict_numerics); bench/fid.py runs with TF32 off unless --tf32; speed figures use the defaults",
        "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
    }
elif what == "section":
    name, status, rc, secs, limit = sys.argv[2:7]
    rec = {"status": status, "rc": int(rc), "seconds": float(secs), "timeout_s": int(limit), "log": f"{name}.log"}
    fig = work / f"{name}.json"
    if fig.is_file():
        try:
            rec["result"] = json.loads(fig.read_text())
        except ValueError:
            rec["result_unreadable"] = str(fig)
    xml = work / f"{name}.xml"
    if xml.is_file():  # pytest --junitxml: counts, failures, skip reasons
        import xml.etree.ElementTree as ET
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        cases = suite.findall("testcase")
        rec["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        rec["tests"]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in cases
                                  if c.find("failure") is not None or c.find("error") is not None]
        rec["tests"]["skip_reasons"] = sorted({c.find("skipped").get("message", "") for c in cases
                                               if c.find("skipped") is not None})
    data["sections"][name] = rec
elif what == "goals":  # speed goals: recorded, never gating
    s, goals = data["sections"], {}
    gs = s.get("gan_step", {}).get("result", {})
    for row in gs.get("throughput", []):
        goal = {64: 4.3, 512: 2.5}.get(row["batch"])
        if goal:
            goals[f"gan_step_b{row['batch']}_ours_vs_bare"] = {"measured": round(row["ratio"], 3), "goal_min": goal,
                                                               "met": row["ratio"] >= goal}
    rs = s.get("gan_step_resnet", {}).get("result", {})  # recorded, no goal yet: the first GPU session sets one
    for mode in ("throughput", "throughput_eager"):
        for row in rs.get(mode, []):
            goals[f"resnet_ada_b{row['batch']}_{'fast' if mode == 'throughput' else 'eager'}_img_per_s"] = {
                "measured": round(row["ours"], 1), "vs_bare_eager_fp32": round(row["ratio"], 3)}
    sw = s.get("sweep_bench", {}).get("result", {}).get("sweeps", {})
    main = sw.get("graphed-reuse") or sw.get("eager-reuse")
    if main:
        goals["sweep_aggregate_vs_naive"] = {"measured": round(main["aggregate_vs_naive"], 3), "goal_min": 4.0,
                                             "met": main["aggregate_vs_naive"] >= 4.0}
        goals["sweep_overhead_median_s"] = {"measured": round(main["overhead_median"], 3), "goal_max": 3.0,
                                            "met": main["overhead_median"] <= 3.0}
    data["goals"] = goals
    bad = [n for n, r in s.items() if r["status"] != "passed"]
    data["ok"] = not bad
    data["failed_sections"] = bad
    for k, g in goals.items():
        if "met" not in g:
            print(f"figure {k}: {g['measured']} ({g['vs_bare_eager_fp32']}x bare eager fp32)")
            continue
        print(f"goal {k}: {g['measured']} ({'met' if g['met'] else 'NOT met'}; goal "
              f"{'>= ' + str(g['goal_min']) if 'goal_min' in g else '<= ' + str(g['goal_max'])})")
tmp = path.with_suffix(".tmp")
tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
tmp.replace(path)
PYEOF
}

START=$SECONDS
FAILED=()
run_section() {  # run_section NAME LIMIT_S COMMAND
  local name=$1 limit=$2 cmd=$3 left=$((BUDGET - (SECONDS - START)))
  if (( left < 30 )); then
    echo "== $name: skipped, ${left}s left of this call's ${BUDGET}s budget" | tee -a "$OUT/gpu_check.log"
    summary section "$name" "skipped_no_time" -1 0 0; FAILED+=("$name"); return
  fi
  (( limit > left - 5 )) && limit=$((left - 5))
  echo "== $name (timeout ${limit}s): $cmd" | tee -a "$OUT/gpu_check.log"
  local t0=$SECONDS
  timeout --kill-after=15 "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  local rc=$? status=passed
  (( rc == 124 || rc == 137 )) && status=timeout
  (( rc != 0 && rc != 124 && rc != 137 )) && status=failed
  tail -n 25 "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
  echo "== $name: $status (rc $rc, $((SECONDS - t0)) s)" | tee -a "$OUT/gpu_check.log"
  summary section "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit"
  [[ $status == passed ]] || FAILED+=("$name")
}

summary env >> "$OUT/gpu_check.log" 2>&1 || echo "gpu_check: could not record the environment (see gpu_check.log)"
"$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["env"], indent=1))' "$OUT/gpu_check.json" \
  2>/dev/null | tee -a "$OUT/gpu_check.log"

# Section bodies run under `timeout ... bash -c`, so they are exported functions.
sec_stage() {  # every carried part that only stages (all but the last); the last one installs in call 2
  local n=0 d
  for d in $(ls -d .devwheels/part* 2>/dev/null | sort -V); do
    if grep -q "pip install" "$d/take.sh"; then echo "$d is the last part: carry it in call 2"; continue; fi
    bash "$d/take.sh" || return 1
    n=$((n + 1))
  done
  (( n > 0 )) || { echo "no staging part carried: run 'bash ../shared/gpu/stage-wheels.sh' here, carry .devwheels/part1"; return 1; }
  ls -la /tmp/stage
}
sec_install() {  # the last part unpacks every staged chunk and pip-installs the wheels into $SITE
  if PYTHONPATH=$SITE "$PY" -c 'import ray, optuna' 2>/dev/null; then echo "Ray and Optuna already in $SITE"; return 0; fi
  local last staged want
  last=$(ls -d .devwheels/part* 2>/dev/null | sort -V | tail -1)
  if [[ -z "$last" ]] || ! grep -q "pip install" "$last/take.sh"; then
    echo "the last wheel part is not carried: carry .devwheels/partN (the highest N) in this call"; return 1
  fi
  staged=$(ls /tmp/stage/chunk.* 2>/dev/null | wc -l); want=$(( ${last##*part} - 1 ))
  if (( staged < want )); then
    echo "only $staged of the $want earlier part(s) are staged in /tmp/stage: this is not the machine call 1 ran on" \
         "(it goes back ~30 s after a call). Redo 'bash bench/gpu_check.sh --only stage' carrying part1, then call 2 at once."
    return 1
  fi
  bash "$last/take.sh" && PYTHONPATH=$SITE "$PY" -c 'import ray, optuna; print("ray", ray.__version__, "optuna", optuna.__version__)'
}
gpu_pytest() {  # gpu_pytest MARKEXPR NAME: the gpu tests; a skipped one fails the section (here every one must run)
  local xml=$GPU_CHECK_WORK/$2.xml rc
  if ! "$PY" -c 'import pytest' 2>/dev/null; then  # the GPU host has no pytest: the carried wheels
    ls .devwheels/pytest/*.whl >/dev/null 2>&1 || { echo "no pytest here: carry .devwheels/pytest (--prepare makes it)"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/pytest_site .devwheels/pytest/*.whl || return 1
    export PYTHONPATH=/tmp/pytest_site:$PYTHONPATH
  fi
  "$PY" -m pytest -q -ra -p no:cacheprovider -m "$1" tests/test_gpu.py tests/test_memory_dtype.py --junitxml="$xml"; rc=$?
  "$PY" - "$xml" <<'EOF' || rc=1
import os, sys, xml.etree.ElementTree as ET
if not os.path.isfile(sys.argv[1]):
    sys.exit("gpu_check: pytest wrote no report (it did not start: see above)")
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n = int(suite.get("skipped", 0))
if n:
    print(f"gpu_check: {n} gpu test(s) skipped: on the GPU host every one must run (reasons above, -ra)")
sys.exit(1 if n else 0)
EOF
  return $rc
}
with_ray() { PYTHONPATH=$SITE:$PYTHONPATH "$@"; }
export -f sec_stage sec_install gpu_pytest with_ray
export PY SITE

for s in $SECTIONS; do
  case $s in
    stage)       run_section stage 90 sec_stage ;;
    tests_noray) run_section tests_noray 240 "gpu_pytest 'gpu and not ray' tests_noray" ;;
    gan_step)    run_section gan_step 200 "$PY bench/gan_step.py --batch-sizes 64,512 --json $WORK/gan_step.json" ;;
    gan_step_resnet) run_section gan_step_resnet 150 "$PY bench/gan_step.py --arch resnet --attention --ada --loss hinge --batch-sizes 64,512 --steps 50 --epochs 3 --modes fast,eager --json $WORK/gan_step_resnet.json" ;;
    install)     run_section install 150 sec_install ;;
    tests_ray)   run_section tests_ray 330 "with_ray gpu_pytest 'gpu and ray' tests_ray" ;;
    sweep_bench) run_section sweep_bench 180 "with_ray $PY bench/sweep.py --modes graphed-reuse --epochs 3 --steps 150 --json $WORK/sweep_bench.json" ;;
    fid)         run_section fid 120 "$PY bench/fid.py --json $WORK/fid.json" ;;
  esac
done

summary goals 2>&1 | tee -a "$OUT/gpu_check.log"
rm -rf "$WORK"
if (( ${#FAILED[@]} )); then
  only=$(IFS=,; echo "${FAILED[*]}")
  echo "gpu_check: FAILED: ${FAILED[*]} (see $OUT/<section>.log). Rerun those only: bash bench/gpu_check.sh --only $only (carry .devwheels/part1 for stage, the last part for install; the Ray sections need install first)" | tee -a "$OUT/gpu_check.log"
  exit 1
fi
echo "gpu_check: all sections passed ($((SECONDS - START)) s); figures in $OUT/gpu_check.json" | tee -a "$OUT/gpu_check.log"
