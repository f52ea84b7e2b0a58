#!/usr/bin/env bash
# latentcam on an NVIDIA GPU against the plain diffusers/torch fp16 frame loop, same random weights, one run, ONE table.
#
#   scripts/gpu_bench.sh --ort-lib /path/to/onnxruntime/capi/libonnxruntime.so.1.31.1 [options]
#   scripts/gpu_bench.sh --family sdxl --no-fp32 --ort-lib ... [options]      (SDXL-shaped: see below)
#
# Needs: an NVIDIA GPU + driver (nvidia-smi), a GPU build of ONNX Runtime >= 1.31 (the onnxruntime-gpu wheel's
# libonnxruntime.so with libonnxruntime_providers_cuda.so beside it; --ort-lib or LATENTCAM_ORT_LIB), the Python tools
# (scripts/pyenv.sh: torch with CUDA, diffusers, transformers, onnx, onnxruntime), and cargo (unless --bin).
# What it does, in order:
#   1. scripts/export_models.py random-sd15 WORK/sd15-random --fp16: RANDOM weights with the real SD1.5 UNet (860M),
#      TAESD (or --vae sd: the SD VAE) and CLIP-L shapes, fp32, plus WORK/sd15-random-fp16 (UNet + VAE in float16 with
#      float16 I/O, fused by ONNX Runtime's transformers optimizer for the CUDA EP). Kept between runs.
#   2. cargo build --release --no-default-features --features cuda   (skipped with --bin)
#   3. latentcam --ep cuda bench ... for fp16 and fp32, stream batch 1 and K, CUDA graph off and on
#   4. scripts/gpu_bench.py torch: the diffusers/torch fp16 loop on the same weights, eager and with one CUDA graph
#      per frame, batch 1 and K
#   5. scripts/gpu_bench.py table: one table (also saved as WORK/results/table.txt)
# --family sdxl: the same steps with `export_models.py random-sdxl WORK/sdxl-random-taesd --fp16`: RANDOM weights with
#   the real SDXL UNet (2.6 B: text_embeds and time_ids ports), TAESDXL (or --vae sd: the SDXL VAE's shape) and the
#   CLIP-L + OpenCLIP bigG text encoders, SDXL-Turbo's defaults (1 step, strength 0.5, guidance 1); sizes 512x512
#   (batch 1 and K) and 1024x1024 (batch 1); 100 frames a variant; results in WORK/results-sdxl (table.txt: one table
#   with a size column and each row's fps over torch's CUDA-graph loop at the same size and batch). Its cost: the fp32
#   SDXL UNet is 10.3 GB and its latentcam runs double the time, so pass --no-fp32. Building the model (estimated
#   from parts measured on a 2-vCPU machine, see export_models.py): ~5-8 min for the fp32 exports (~25 GB of memory),
#   plus ~4-6 min and ~60 GB for the CUDA fusion, or ~2 min and ~25 GB with --no-fuse (plain float16 conversion:
#   unfused attention, slower on the GPU); ~19 GB of disk. The torch side rebuilds the modules (~1 min).
#   On a machine lent for 15 minutes (one command at most 10): bring a built CUDA binary (--bin), run once with
#   --no-fp32 --no-fuse --build-only, then again with --no-fp32 --no-fuse --frames 50 (the model folders are reused
#   while the machine stays warm); --size 512x512 drops the 1024² pass.
#   Target (issue 19): SDXL-Turbo 512², 1 step, >= 30 fps at batch 1 on an H100/H200 through the pipeline.
# Exit status: 0 done (a variant that failed shows as "failed" in the table), 2 bad option or no usable GPU / CUDA /
# ONNX Runtime GPU build, 1 the model or the build failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() {
    cat <<EOF
usage: scripts/gpu_bench.sh [options]
  --ort-lib PATH     libonnxruntime.so of a GPU build (default: \$LATENTCAM_ORT_LIB)
  --family F         sd15 (default: the SD1.5-shaped model) or sdxl (the SDXL-shaped one; use --no-fp32 with it)
  --frames N         timed frames per variant (default 200; sdxl 100)
  --k K              stream-batch size to compare with batch 1 (default 4)
  --size WxH[,WxH]   image sizes, sides multiples of 64: batch 1 and K at the first, batch 1 at the others
                     (default 512x512; sdxl 512x512,1024x1024)
  --vae taesd|sd     VAE of the random model (default taesd: TAESD, or TAESDXL's shape for sdxl)
  --work DIR         models, results, logs (default target/gpu-bench)
  --python PY        Python with torch+CUDA, diffusers, onnx, onnxruntime (default .venv-scripts/bin/python, else python3)
  --bin PATH         an already built CUDA latentcam binary (skips cargo build)
  --timeout S        limit for each latentcam run (default 600)
  --no-fp32          only the fp16 model on latentcam's side (advised for sdxl: the fp32 SDXL UNet is 10 GB and
                     its runs double the time; on a 15-minute GPU lease use --no-fp32, and --no-fuse if needed)
  --no-fuse          fp16 model by plain float16 conversion instead of ONNX Runtime's CUDA fusion (builds minutes
                     faster with less memory: ~25 instead of ~60 GB for SDXL; the GPU runs it slower)
  --no-torch         skip the torch baseline
  --tiny             tiny shapes (smoke test of this script; numbers mean nothing)
  --build-only       build the models and the binary, then stop (exit 0): a first call on a lent machine;
                     a second call without it reuses them (one command may run at most 10 minutes there)
  --dry-run          print what would run; no GPU checks, nothing built or run
EOF
}
die() { echo "gpu_bench: error: $*" >&2; exit 2; }

ort_lib=${LATENTCAM_ORT_LIB:-}
frames="" k=4 size="" vae=taesd work=$root/target/gpu-bench python="" bin="" timeout_s=600 family=sd15
no_fp32=0 no_torch=0 no_fuse=0 tiny=0 dry=0 build_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --ort-lib) ort_lib=${2:?--ort-lib needs a path}; shift 2 ;;
        --family) family=${2:?}; shift 2 ;;
        --frames) frames=${2:?}; shift 2 ;;
        --k) k=${2:?}; shift 2 ;;
        --size) size=${2:?}; shift 2 ;;
        --vae) vae=${2:?}; shift 2 ;;
        --work) work=${2:?}; shift 2 ;;
        --python) python=${2:?}; shift 2 ;;
        --bin) bin=${2:?}; shift 2 ;;
        --timeout) timeout_s=${2:?}; shift 2 ;;
        --no-fp32) no_fp32=1; shift ;;
        --no-torch) no_torch=1; shift ;;
        --no-fuse) no_fuse=1; shift ;;
        --tiny) tiny=1; shift ;;
        --dry-run) dry=1; shift ;;
        --build-only) build_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
case "$family" in
    sd15) : "${frames:=200}" "${size:=512x512}" ;;
    sdxl) : "${frames:=100}" "${size:=512x512,1024x1024}" ;;
    *) die "--family must be sd15 or sdxl (got '$family')" ;;
esac
[[ $frames =~ ^[1-9][0-9]*$ ]] || die "--frames must be a positive integer (got '$frames')"
[[ $k =~ ^[1-9][0-9]*$ ]] || die "--k must be a positive integer (got '$k')"
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (got '$timeout_s')"
sizes=()
IFS=, read -r -a size_list <<< "$size"
for one in "${size_list[@]}"; do
    [[ $one =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || die "--size must be WxH or a comma-separated list of them (got '$size')"
    (( BASH_REMATCH[1] % 64 == 0 && BASH_REMATCH[2] % 64 == 0 )) || die "--size sides must be multiples of 64 (got $one)"
    sizes+=("$one")
done
[ ${#sizes[@]} -gt 0 ] || die "--size is empty"
case "$vae" in taesd|sd) ;; *) die "--vae must be taesd or sd (got '$vae')" ;; esac
if [ -z "$python" ]; then
    if [ -x "$root/.venv-scripts/bin/python" ]; then python=$root/.venv-scripts/bin/python; else python=python3; fi
fi
work=$(realpath -m "$work")
[ $dry = 1 ] || mkdir -p "$work" 2>/dev/null || die "cannot create --work $work"
model=$work/$family-random-$vae$([ $tiny = 1 ] && echo -tiny)$([ $no_fuse = 1 ] && echo -nofuse)
results=$work/results
[ "$family" = sdxl ] && results=$work/results-sdxl  # an SD1.5 run's results stay
batches=1; [ "$k" != 1 ] && batches="1 $k"
precisions="fp16"; [ $no_fp32 = 0 ] && precisions="fp16 fp32"
plan="" n_runs=0
for si in "${!sizes[@]}"; do
    bs=$batches; [ "$si" -gt 0 ] && bs=1
    plan+="${plan:+; }${sizes[$si]} batch ${bs// /, }"
    n_runs=$((n_runs + $(wc -w <<< "$bs") * 2 * $(wc -w <<< "$precisions")))
done
echo "gpu_bench: plan: $family-shaped random model ($vae VAE$([ $tiny = 1 ] && echo ", TINY")$([ $no_fuse = 1 ] &&
    echo ", fp16 unfused")); latentcam ${precisions// /+}, CUDA graph off and on, at $plan: $n_runs runs of" \
    "$frames frames$([ $no_torch = 0 ] && echo "; diffusers/torch fp16 eager and CUDA graph at the same points")" >&2
[ "$family" = sdxl ] && [ $no_fp32 = 0 ] && [ $tiny = 0 ] &&
    echo "gpu_bench: note: the fp32 SDXL UNet is 10 GB and its runs double the time: --no-fp32 is advised" >&2

run() {  # echo a command; run it unless --dry-run
    echo "+ $*" >&2
    [ $dry = 1 ] || "$@"
}

# ---- 0. what this machine has (all fatal: exit 2) -----------------------------------------------------------------
if [ $dry = 1 ]; then
    echo "gpu_bench: dry run: GPU, CUDA and ONNX Runtime checks skipped; commands are printed, not run" >&2
    # shellcheck disable=SC2016  # a placeholder printed in the dry run
    [ -n "$ort_lib" ] || ort_lib='$LATENTCAM_ORT_LIB'
else
    command -v nvidia-smi >/dev/null 2>&1 ||
        die "nvidia-smi not found: this benchmark needs an NVIDIA GPU with its driver installed"
    gpus=$(nvidia-smi -L 2>&1) || die "nvidia-smi failed (no usable NVIDIA GPU or driver): $gpus"
    echo "$gpus" | grep -q '^GPU ' || die "nvidia-smi lists no GPU: $gpus"
    echo "gpu_bench: $gpus" >&2
    [ -n "$ort_lib" ] || die "no ONNX Runtime GPU build given: pass --ort-lib PATH or set LATENTCAM_ORT_LIB (e.g. the \
onnxruntime-gpu wheel's onnxruntime/capi/libonnxruntime.so.1.31.1)"
    [ -f "$ort_lib" ] || die "--ort-lib $ort_lib: no such file"
    ort_dir=$(dirname "$(readlink -f "$ort_lib")")
    [ -f "$ort_dir/libonnxruntime_providers_cuda.so" ] ||
        die "--ort-lib $ort_lib: no libonnxruntime_providers_cuda.so beside it; that is not a CUDA build of ONNX Runtime"
    command -v "$python" >/dev/null 2>&1 || die "no Python at '$python' (run scripts/pyenv.sh or pass --python)"
    cuda_check=$("$python" -c 'import torch, diffusers, onnx, onnxruntime.transformers.optimizer
assert torch.cuda.is_available(), "torch.cuda.is_available() is False (a CPU-only torch, or no driver)"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())' 2>&1) ||
        die "$python cannot run the torch side on CUDA: $(echo "$cuda_check" | tail -1)"
    echo "gpu_bench: torch $cuda_check" >&2
    # ONNX Runtime's CUDA EP loads cuDNN/cuBLAS/cudart; the pip nvidia-* packages that came with torch have them.
    nv_libs=$("$python" -c 'import os
try:
    import nvidia
except ImportError:
    raise SystemExit
print(":".join(sorted({os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)
                       if os.path.isdir(os.path.join(p, d, "lib"))})))' 2>/dev/null)
    export LD_LIBRARY_PATH="${nv_libs:+$nv_libs:}$ort_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LATENTCAM_ORT_LIB=$ort_lib
fi

# ---- 1. the random SD1.5- or SDXL-shaped model, fp32 + fp16 -------------------------------------------------------
if [ -f "$model/model.toml" ] && [ -f "$model-fp16/model.toml" ]; then
    echo "gpu_bench: reusing $model and $model-fp16 (delete them to rebuild)" >&2
else
    tiny_flag=(); [ $tiny = 1 ] && tiny_flag=(--tiny)
    if [ "$family" = sdxl ]; then
        if [ $tiny = 0 ] && [ $dry = 0 ]; then
            mkdir -p "$work"
            free_gb=$(df -P -BG "$work" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
            [ "${free_gb:-0}" -ge 20 ] ||
                echo "gpu_bench: warning: ${free_gb:-?} GB free under $work; the SDXL model needs about 19 GB" >&2
        fi
        fuse_flag=(); [ $no_fuse = 1 ] && fuse_flag=(--no-fuse)
        run "$python" "$root/scripts/export_models.py" random-sdxl "$model" --fp16 --vae "$vae" "${fuse_flag[@]}" \
            "${tiny_flag[@]}" || { echo "gpu_bench: building the random model failed" >&2; exit 1; }
    elif [ $no_fuse = 1 ]; then  # the fp32 folder, then its plain fp16 twin
        { run "$python" "$root/scripts/export_models.py" random-sd15 "$model" --vae "$vae" "${tiny_flag[@]}" &&
            run "$python" "$root/scripts/export_models.py" fp16 "$model" "$model-fp16" --check-size 0; } ||
            { echo "gpu_bench: building the random model failed" >&2; exit 1; }
    else
        run "$python" "$root/scripts/export_models.py" random-sd15 "$model" --fp16 --vae "$vae" "${tiny_flag[@]}" ||
            { echo "gpu_bench: building the random model failed" >&2; exit 1; }
    fi
fi

# ---- 2. latentcam with the CUDA EP ---------------------------------------------------------------------------------
if [ -z "$bin" ]; then
    (cd "$root" && run cargo build --release --no-default-features --features cuda) ||
        { echo "gpu_bench: cargo build failed" >&2; exit 1; }
    bin=$root/target/release/latentcam
fi
[ $dry = 1 ] || [ -x "$bin" ] || die "latentcam binary $bin is missing or not executable"
if [ $build_only = 1 ]; then
    [ $dry = 1 ] && echo "gpu_bench: --build-only: would stop here" >&2 ||
        echo "gpu_bench: --build-only: $model, $model-fp16 and $bin are ready; rerun without it to measure" >&2
    exit 0
fi

# ---- 3. latentcam bench: size x precision x stream batch x CUDA graph ---------------------------------------------
[ $dry = 1 ] || { rm -rf "$results"; mkdir -p "$results"; }
for si in "${!sizes[@]}"; do
    sz=${sizes[$si]}
    size_batches=$batches; [ "$si" -gt 0 ] && size_batches=1  # further sizes: batch 1 only
    tag=""; [ ${#sizes[@]} -gt 1 ] && tag=${sz}_
    for prec in $precisions; do
        dir=$model; [ "$prec" = fp16 ] && dir=$model-fp16
        for b in $size_batches; do
            for graph in false true; do
                name=latentcam_${tag}${prec}_k${b}_graph-${graph}
                cmd=("$bin" --ort-lib "$ort_lib" --ep cuda bench --model "$dir" --size "$sz" --steps 1 --strength 0.5
                     --frames "$frames" --json "$results/$name.json"
                     --set "engine.stream-batch=$b" --set "engine.cuda-graph=$graph")
                if [ $dry = 1 ]; then run timeout "$timeout_s" "${cmd[@]}"; continue; fi
                echo "gpu_bench: latentcam $sz $prec, stream batch $b, CUDA graph $graph" >&2
                echo "+ ${cmd[*]}" > "$results/$name.log"
                timeout "$timeout_s" "${cmd[@]}" >> "$results/$name.log" 2>&1
                status=$?
                err=""
                if [ $status -ne 0 ]; then
                    err=$(grep -v '^+ ' "$results/$name.log" | grep -i -E 'error|panic' | tail -1)
                    [ $status -eq 124 ] && err="timed out after ${timeout_s}s"
                    [ -n "$err" ] || err="exit status $status (see $results/$name.log)"
                    echo "gpu_bench:   failed: $err" >&2
                fi
                ERR=$err "$python" - "$results/$name.meta.json" "$prec" "$b" "$graph" "$status" "$sz" "$family" <<'PY'
import json, os, sys
path, prec, batch, graph, status, size, family = sys.argv[1:]
json.dump(dict(precision={"fp16": "float16", "fp32": "float32"}[prec], batch=int(batch), cuda_graph=graph == "true",
               status=int(status), error=os.environ.get("ERR") or None, size=size, family=family), open(path, "w"))
PY
            done
        done
    done
done

# ---- 4. the diffusers/torch fp16 loop on the same weights ---------------------------------------------------------
if [ $no_torch = 0 ]; then
    tiny_flag=(); [ $tiny = 1 ] && tiny_flag=(--tiny)
    family_flag=(); torch_timeout=1200
    [ "$family" = sdxl ] && { family_flag=(--family sdxl); torch_timeout=1800; }
    torch_cmd=("$python" "$root/scripts/gpu_bench.py" torch --json "$results/torch.json" "${family_flag[@]}"
               --vae "$vae" --batches "${batches// /,}" --frames "$frames" --size "$size" "${tiny_flag[@]}")
    if [ $dry = 1 ]; then
        run timeout $torch_timeout "${torch_cmd[@]}"
    else
        where=""; [ ${#sizes[@]} -gt 1 ] && where=" at ${sizes[0]}, batch 1 at ${sizes[*]:1}"
        echo "gpu_bench: diffusers/torch fp16, eager and CUDA graph, batch ${batches// /, }$where" >&2
        timeout $torch_timeout "${torch_cmd[@]}" 2>&1 | tee "$results/torch.log" | grep -E '^(RESULT|torch:|error)' >&2
        [ "${PIPESTATUS[0]}" -eq 0 ] || tail -3 "$results/torch.log" > "$results/torch.error"
    fi
fi

# ---- 5. one table --------------------------------------------------------------------------------------------------
if [ $dry = 1 ]; then
    run "$python" "$root/scripts/gpu_bench.py" table "$results"
    exit 0
fi
"$python" "$root/scripts/gpu_bench.py" table "$results" | tee "$results/table.txt"
