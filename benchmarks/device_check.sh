#!/usr/bin/env bash
# The GPU check: the tests marked gpu, then the benchmarks' CUDA runs, in one command on a lent GPU machine
# (one NVIDIA H200, offline). README "Performance" / "GPU check" says how to call it through the device tool.
#
#   bash benchmarks/device_check.sh [STEP ...]            on the GPU machine, from the repository root
#   bash benchmarks/device_check.sh --dry-run [STEP ...]  here: print the commands, check what can be checked
#   bash benchmarks/device_check.sh --prepare             here, once: fill .data/ and .whl/ (pip downloads)
#
# STEP: tests classifier stacked sampling recycle quick (default: all, in this order; name some to rerun them).
# quick: GaFi end to end with params/cifar10-quick.yaml on the CIFAR-10 copy (benchmarks/quick_gafi.py); it runs
# only when at least QUICK_MIN_S (300) seconds remain, else `bash benchmarks/device_check.sh quick` alone.
#
# Inputs: two folders ignored by git, which the caller fills (--prepare does) and names in the tool's `carry`:
#   .data/cifar10-jpg.tar.xz  CIFAR-10 as JPEG ImageFolder (train/<class>/*.jpg, test/<class>/*.jpg; see
#                             shared/data/README.md), extracted here into a temp folder for the 100-epoch run
#   .whl/*.whl                wheels of what the GPU image lacks (pydantic, ruamel.yaml, diffusers, ...), installed
#                             offline (--no-index) into /tmp/site; nothing is downloaded on the GPU machine
# Outputs: benchmarks/results/<name>-cuda.json (the benchmarks write them) and, under $OUT (the device tool's
# return folder; a temp folder when unset): summary.txt, device-check.log, pytest-gpu.xml, each <name>-cuda.json
# and, after quick, quick_gafi/ (the GaFi tables). Commit the JSON files into benchmarks/results/.
# Time: each step runs under `timeout` with its own budget, all capped by one deadline (DEADLINE_S, 530 s from
# the start), so the script ends within 9 minutes; a step that fails or times out is recorded in summary.txt
# (and the exit status is 1) and the next step still runs.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
ARCHIVE=".data/cifar10-jpg.tar.xz"
GPU_TESTS="${GPU_TESTS:-tests/test_gpu.py}"  # only this file: collecting every module would need all the project's deps
DEADLINE_S="${DEADLINE_S:-530}"
ALL_STEPS=(tests classifier stacked sampling recycle quick)
declare -A BUDGET=([tests]=200 [classifier]=300 [stacked]=150 [sampling]=120 [recycle]=150 [quick]=520)
QUICK_MIN_S="${QUICK_MIN_S:-300}"  # the quick preset's FLOP estimate is ~6 minutes on an H200
# what the GPU image lacks (.library/device/KINDS.md's package list) and the project imports; pinned to this
# machine's versions by --prepare
WHEELS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions ruamel.yaml diffusers)
# -p no:xdist needs -o addopts= (pyproject.toml's addopts hold xdist's -n 2)
PYTEST=("$PY" -m pytest "$GPU_TESTS" -m gpu -p no:xdist -o addopts= -p no:cacheprovider)

MODE=run
STEPS=()
for arg in "$@"; do
    case "$arg" in
        --dry-run) MODE=dry ;;
        --prepare) MODE=prepare ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        tests|classifier|stacked|sampling|recycle|quick) STEPS+=("$arg") ;;
        *) echo "device_check: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=("${ALL_STEPS[@]}")

step_command() {  # the command of one step, one word per line
    case "$1" in
        tests) printf '%s\n' "${PYTEST[@]}" -v -rA "--junitxml=$OUT/pytest-gpu.xml" ;;
        classifier) printf '%s\n' "$PY" -m benchmarks.classifier --device cuda ${CIFAR:+--cifar10 "$CIFAR"} ;;
        stacked) printf '%s\n' "$PY" -m benchmarks.stacked --device cuda ;;
        sampling) printf '%s\n' "$PY" -m benchmarks.sampling --device cuda ;;
        recycle) printf '%s\n' "$PY" -m benchmarks.recycle --device cuda --images 10000 ;;  # scaled to 40,000 in its JSON
        quick) printf '%s\n' "$PY" -m benchmarks.quick_gafi --cifar10 "$CIFAR" --device cuda --out "$OUT/quick_gafi" ;;
    esac
}

# ------------------------------------------------------------------------------------------------ --prepare
prepare() {
    set -e
    local source
    for source in "${CIFAR_ARCHIVE:-}" ../shared/data/cifar10-jpg.tar.xz shared/data/cifar10-jpg.tar.xz; do
        [ -n "$source" ] && [ -f "$source" ] && break
    done
    [ -f "$source" ] || { echo "no cifar10-jpg.tar.xz found: set CIFAR_ARCHIVE=path" >&2; exit 1; }
    mkdir -p .data .whl
    for folder in .data .whl; do
        git check-ignore -q "$folder" || echo "/$folder/" >> .git/info/exclude
    done
    install -m 0644 "$source" "$ARCHIVE"
    local pins=()
    mapfile -t pins < <("$PY" -c 'import sys, importlib.metadata as m; [print(f"{n}=={m.version(n)}") for n in sys.argv[1:]]' "${WHEELS[@]}")
    echo "wheels for the GPU machine's Python 3.12 (x86-64): ${pins[*]}"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
    ls -l "$ARCHIVE" .whl
    echo "carry: .data .whl ($(du -cshL .data .whl | tail -1 | cut -f1)); next: bash benchmarks/device_check.sh --dry-run"
}

# ------------------------------------------------------------------------------------------------ --dry-run
dry_run() {
    local problems=0 step f
    ok() { echo "  ok       $*"; }
    bad() { echo "  PROBLEM  $*"; problems=$((problems + 1)); }
    OUT='$OUT' CIFAR='<temp folder>'
    echo "== commands (on the GPU machine, from $ROOT)"
    echo "  nvidia-smi; $PY -c '<versions of python, torch, CUDA and the project's packages>'"
    echo "  [ -d .whl ] && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl"
    echo "  export PYTHONPATH=$ROOT/src:$ROOT:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 ..."
    echo "  $PY -c 'tarfile.open(\"$ARCHIVE\").extractall(\"<temp folder>\")'   (in the background, during the tests)"
    for step in "${STEPS[@]}"; do
        echo "  [$step, at most ${BUDGET[$step]} s] timeout ${BUDGET[$step]} $(step_command "$step" | tr '\n' ' ')"
    done
    echo "  cp benchmarks/results/*-cuda.json \$OUT/   (+ summary.txt, device-check.log, pytest-gpu.xml)"
    echo "== prerequisites (here)"
    for f in "$GPU_TESTS" benchmarks/classifier.py benchmarks/stacked.py benchmarks/sampling.py benchmarks/recycle.py \
             benchmarks/quick_gafi.py params/cifar10-quick.yaml; do
        [ -f "$f" ] && ok "$f" || bad "$f missing"
    done
    if [ -f "$ARCHIVE" ]; then
        git check-ignore -q "$ARCHIVE" && ok "$ARCHIVE ($(du -h "$ARCHIVE" | cut -f1), ignored by git)" \
            || bad "$ARCHIVE is not ignored by git: echo /.data/ >> .git/info/exclude"
    else
        bad "$ARCHIVE missing: bash benchmarks/device_check.sh --prepare (or copy shared/data/cifar10-jpg.tar.xz there)"
    fi
    local wheel missing=()
    for wheel in "${WHEELS[@]}"; do
        compgen -G ".whl/$(echo "$wheel" | tr '-' '_' | sed 's/\./[._]/g')-*.whl" > /dev/null || missing+=("$wheel")
    done
    [ ${#missing[@]} -eq 0 ] && ok ".whl/ holds wheels for ${WHEELS[*]}" \
        || bad "no wheel in .whl/ for: ${missing[*]} (the GPU image lacks them): bash benchmarks/device_check.sh --prepare"
    local size
    size=$( (git ls-files -z --cached --others --exclude-standard | du -cbL --files0-from=- 2>/dev/null | tail -1 | cut -f1;
             du -sbL .data .whl 2>/dev/null | cut -f1) | awk '{s += $1} END {print int(s / 1048576)}')
    [ "$size" -lt 64 ] && ok "working tree + .data + .whl = $size MiB (the device tool takes 64)" \
        || bad "working tree + .data + .whl = $size MiB, over the device tool's 64 MiB"
    if "$PY" -c 'import synthgap.config, synthgap.train.classifier, synthgap.models.stacked, synthgap.realfake.finetune, accelerate, peft, diffusers, benchmarks.classifier, benchmarks.stacked, benchmarks.sampling, benchmarks.recycle, benchmarks.quick_gafi' 2>/tmp/device_check_import.err; then
        ok "the tests' and benchmarks' modules import"
    else
        bad "import failed: $(tail -1 /tmp/device_check_import.err)"
    fi
    local selected
    selected=$("${PYTEST[@]}" --collect-only -q 2>&1 | grep -c '::test_')
    [ "$selected" -ge 6 ] && ok "pytest -m gpu selects $selected tests in $GPU_TESTS" \
        || bad "pytest -m gpu selects only $selected tests in $GPU_TESTS (want >= 6)"
    bash -n "$0" && ok "bash -n $0"
    echo "== device tool call"
    echo "  run(command='bash benchmarks/device_check.sh', carry=['.data', '.whl'], timeout_s=600)"
    [ "$problems" -eq 0 ] && echo "dry run: ready" || echo "dry run: $problems problem(s)"
    [ "$problems" -eq 0 ]
}

# ------------------------------------------------------------------------------------------------ the run
START=$SECONDS
note() { printf '%-11s %-26s %7s  %s\n' "$1" "$2" "$3" "$4" | tee -a "$OUT/summary.txt"; }

run_step() {
    local step=$1 left=$((DEADLINE_S - (SECONDS - START))) limit t0 rc
    limit=$(( left < BUDGET[$step] ? left : BUDGET[$step] ))
    local cmd=()
    mapfile -t cmd < <(step_command "$step")
    if [ "$step" = quick ] && { [ -z "$CIFAR" ] || [ "$limit" -lt "$QUICK_MIN_S" ]; }; then
        note "$step" "SKIPPED (${limit} s left)" 0 "run it alone: bash benchmarks/device_check.sh quick"; return
    fi
    if [ "$limit" -lt 20 ]; then
        note "$step" "SKIPPED (deadline)" 0 "${cmd[*]}"; FAILED=1; return
    fi
    echo; echo "======== $step (at most $limit s): ${cmd[*]}"
    t0=$SECONDS
    timeout -k 10 "$limit" "${cmd[@]}"
    rc=$?
    case $rc in
        0) note "$step" "ok" $((SECONDS - t0)) "${cmd[*]}" ;;
        124|137) note "$step" "TIMED OUT after $limit s" $((SECONDS - t0)) "${cmd[*]}"; FAILED=1 ;;
        *) note "$step" "FAILED (exit $rc)" $((SECONDS - t0)) "${cmd[*]}"; FAILED=1 ;;
    esac
}

main() {
    FAILED=0
    MARK=$(mktemp /tmp/device-check-start.XXXXXX)  # the benchmarks' JSON files newer than this are this run's
    echo "device check $(date -u +%FT%TZ), steps: ${STEPS[*]}, deadline ${DEADLINE_S} s, results to $OUT"
    nvidia-smi || echo "nvidia-smi failed"
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            && SITE=/tmp/site || echo "installing the carried wheels failed"
    fi
    export PYTHONPATH="$ROOT/src:$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
        HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
    "$PY" - <<'EOF'
import importlib.metadata as m, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
for name in ("numpy", "pydantic", "ruamel.yaml", "diffusers", "transformers", "peft", "accelerate", "huggingface-hub",
             "pytest", "triton"):
    try:
        print(f"  {name} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"  {name} MISSING")
import synthgap.config, synthgap.train.classifier, synthgap.realfake.finetune, diffusers  # noqa: E401  (fails early, clearly)
print(f"synthgap imports from {synthgap.__file__}")
EOF
    printf '%-11s %-26s %7s  %s\n' step status seconds command > "$OUT/summary.txt"
    CIFAR=""
    local data extract=""
    if [[ " ${STEPS[*]} " == *" classifier "* || " ${STEPS[*]} " == *" quick "* ]]; then
        if [ -f "$ARCHIVE" ]; then
            data=$(mktemp -d /tmp/cifar10.XXXXXX)
            # Python's tarfile (lzma is in the standard library): the image may lack the xz program
            timeout 240 "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
                "$ARCHIVE" "$data" &
            extract=$!
        else
            echo "no $ARCHIVE: the classifier benchmark runs without the 100-epoch CIFAR-10 run"
        fi
    fi
    local step
    for step in "${STEPS[@]}"; do
        if [[ "$step" = classifier || "$step" = quick ]] && [ -n "$extract" ] && [ -z "$CIFAR" ]; then
            local train=""
            wait "$extract" && train=$(find "$data" -maxdepth 3 -type d -name train | head -1)
            if [ -n "$train" ]; then
                CIFAR=$(dirname "$train")
                echo "CIFAR-10 extracted to $CIFAR ($(find "$CIFAR" -name '*.jpg' | wc -l) images)"
            else
                echo "extracting $ARCHIVE failed (or it holds no train/): the classifier runs without the 100-epoch run"
            fi
        fi
        run_step "$step"
    done
    # this run's results only (a committed older *-cuda.json is not copied)
    find benchmarks/results -name '*-cuda.json' -newer "$MARK" -exec cp {} "$OUT"/ \;
    echo; echo "======== summary: $((SECONDS - START)) s; in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
    cat "$OUT/summary.txt"
    "$PY" - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, pathlib, sys
shown = {"classifier": ["ours_img_per_s", "ours_fp32_img_per_s", "baseline_img_per_s", "ratio", "cifar10_100_epochs"],
         "stacked": ["shapes"], "sampling": ["img_per_s", "sd_img2img_512px_30_steps"],
         "recycle": ["images_per_epoch", "filter_acceptance", "seconds_per_epoch", "projected_s_per_100_epochs"],
         "quick_gafi": ["total_s", "comparisons"]}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*-cuda.json")):
    r = json.loads(path.read_text())
    print(f"{path.name}: {r['device']} ({r['device_type']}), torch {r['torch']}, {r['date']}")
    print("   ", json.dumps({k: r[k] for k in shown.get(r["benchmark"], []) if k in r}))
EOF
    return "$FAILED"
}

case "$MODE" in
    prepare) prepare ;;
    dry) dry_run ;;
    run)
        OUT="${OUT:-$(mktemp -d /tmp/device-check.XXXXXX)}"
        mkdir -p "$OUT"
        main 2>&1 | tee "$OUT/device-check.log"
        ;;
esac
