#!/usr/bin/env bash
# The CUDA paths end to end on one GPU, then DenseNet121's staging recipe for many passes.
#
# Usage: benchmarks/cuda_check.sh OUT_DIR [DEVICE] [SCALE]
#   DEVICE: cuda (default) or cpu (a dry run of the script itself)
#   SCALE:  full (default; about 9 minutes on one H100 with 16 CPU cores) or tiny
#   DEADLINE_S (environment, default 560): the long run's time budget is what is left of it
#
# Part 1 (smoke): every command that takes a device, on that device: `train` (DenseNet121 and
# ResNet50 with AMP by the precision policy; the cnn in fp16 with a GradScaler), `evaluate`,
# `predict`, `gan train` (2D and 3D), `gan evaluate`, `simulate`, and `train` under `torchrun`
# (one process: the NCCL path with SyncBatchNorm and DistributedDataParallel). On a GPU also the
# speed levers: training throughput at batch 32 and 128, and `torch.compile` against eager.
# Part 2 (long): the README's DenseNet121 accuracy recipe (`bench_train.RECIPES`, 20,160
# training slices) for EPOCHS passes instead of one, scored on validation each pass and on
# the test split once at the end: what compute beyond the 15-CPU-minute budget buys.
#
# Each step runs under a time limit and the script goes on when one fails; `summary.txt` lists
# every step's exit status and seconds, `log.txt` holds all output.
set -u
OUT=${1:?usage: cuda_check.sh OUT_DIR [DEVICE] [SCALE]}
DEV=${2:-cuda}
SCALE=${3:-full}
WORK=${WORK:-/tmp/lungcancer-cuda-check}
CPUS=$(nproc)
SYNTH_WORKERS=$((CPUS > 4 ? CPUS - 4 : 1))
LOADER_WORKERS=$((CPUS > 4 ? CPUS - 4 : 0))
if [ "$SCALE" = full ]; then
    SMALL=120; BASE=1400; EXTRA=2800; EXTRA2=1400; LONG=40; VOL=16; EPOCHS=6; GAN_STEPS=100
else
    SMALL=24; BASE=40; EXTRA=20; EXTRA2=20; LONG=12; VOL=6; EPOCHS=1; GAN_STEPS=4
fi
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
LC=(python3 -m lungcancer.cli)

# step NAME SECONDS CMD...: run CMD under a limit, log its output, record rc and time.
step() {
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    echo "===== $name: $*" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - started))s" | tee -a "$SUMMARY"
    return $rc
}

step env 60 bash -c "nvidia-smi -L; python3 -c 'import torch, monai, sys; print(sys.version); \
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\"); print(monai.__version__)'; \
lscpu | grep -o 'amx[a-z_0-9]*\|avx512_bf16' | sort -u | tr '\n' ' '; echo; nproc"

# ---- data: the small sets first; the benchmark's sets in the background meanwhile ----------
step synth_small 90 "${LC[@]}" synth --out "$WORK/sim" --patients $SMALL --size 192 --seed 7 --no-png \
    --workers $SYNTH_WORKERS
(
    "${LC[@]}" synth --out "$WORK/lungsim1400" --patients $BASE --size 192 --seed 23 --no-png \
        --workers $SYNTH_WORKERS &&
        "${LC[@]}" synth --out "$WORK/lungsim-extra" --patients $EXTRA --size 192 --seed 24 \
            --id-prefix trx --no-png --workers $SYNTH_WORKERS &&
        "${LC[@]}" synth --out "$WORK/lungsim-extra2" --patients $EXTRA2 --size 192 --seed 25 \
            --id-prefix trz --no-png --workers $SYNTH_WORKERS
) >"$WORK/synth_big.log" 2>&1 &
SYNTH_PID=$!

# ---- part 1: every device path ---------------------------------------------------------------
step train_densenet121 150 "${LC[@]}" train --config configs/quick.yaml --data "$WORK/sim" \
    --model densenet121 --epochs 2 --device "$DEV" --out "$WORK/dn"
step evaluate 120 "${LC[@]}" evaluate "$WORK/dn" --device "$DEV" --n-boot 200 --localisation-samples 20
SLICE=$(ls "$WORK"/sim/sim-00001/*_s0.nrrd 2>/dev/null | grep -v _mask | head -1)
step predict 60 "${LC[@]}" predict "$WORK/dn/best.pt" "$SLICE" --device "$DEV" --json
if [ "$DEV" != cpu ]; then  # fp16 AMP with a GradScaler: GPUs without bf16 get it (a CPU refuses)
    step train_fp16_gradscaler 120 "${LC[@]}" train --config configs/quick.yaml --data "$WORK/sim" \
        --model cnn --epochs 1 --device "$DEV" --precision fp16 --out "$WORK/cnn_fp16"
fi
if [ "$DEV" != cpu ]; then  # GPU speed levers: batch size (batch 32 is launch-bound) and compile
    step speed_batch_sizes 150 python3 benchmarks/bench_train.py --device "$DEV" --quick \
        --batch-sizes 32,128
    step speed_compile 300 python3 benchmarks/bench_compile.py --device "$DEV" --rounds 3
fi
step train_resnet50 120 "${LC[@]}" train --config configs/quick.yaml --data "$WORK/sim" \
    --model resnet50 --epochs 1 --device "$DEV" --out "$WORK/r50"
step torchrun_one_process 120 python3 -m torch.distributed.run --standalone --nproc_per_node 1 \
    -m lungcancer.cli train --config configs/quick.yaml --data "$WORK/sim" --model densenet121 \
    --epochs 1 --device "$DEV" --out "$WORK/dn_ddp"
step synth_long 90 "${LC[@]}" synth --out "$WORK/long" --patients $LONG --timepoints 0,12 --size 256 \
    --seed 9 --no-png --workers $SYNTH_WORKERS
step gan_train_2d 150 "${LC[@]}" gan train --data "$WORK/long" --out "$WORK/gan" --steps $GAN_STEPS \
    --device "$DEV"
step gan_evaluate 120 "${LC[@]}" gan evaluate "$WORK/gan/checkpoint.pt" --data "$WORK/long" \
    --classifier "$WORK/dn/best.pt" --months 12 --out "$WORK/gan_eval"
LONG_SLICE=$(ls "$WORK"/long/sim-00002/*_m0_s0.nrrd 2>/dev/null | head -1)
step simulate 90 "${LC[@]}" simulate "$WORK/gan/checkpoint.pt" "$LONG_SLICE" \
    --mask "${LONG_SLICE%.nrrd}_mask.nrrd" --classifier "$WORK/dn/best.pt" --months 0,6,12 \
    --out "$WORK/sim_out"
step synth_3d 90 "${LC[@]}" synth --out "$WORK/sim3d" --patients $VOL --dims 3 --depth 48 --size 192 \
    --thickness 2 --timepoints 0,12 --seed 11 --no-png --workers $SYNTH_WORKERS
printf 'gan:\n  spatial_dims: 3\n  patch_size: 32\n' >"$WORK/gan3d.yaml"
step gan_train_3d 120 "${LC[@]}" gan train --data "$WORK/sim3d" --config "$WORK/gan3d.yaml" \
    --out "$WORK/gan3d" --steps $((GAN_STEPS / 2)) --device "$DEV"

# ---- part 2: the accuracy recipe for EPOCHS passes -------------------------------------------
step synth_big_wait 900 bash -c "while kill -0 $SYNTH_PID 2>/dev/null; do sleep 2; done"
cat "$WORK/synth_big.log" >>"$LOG"
# What is left of DEADLINE_S, less a minute for the test split and the archive.
LEFT_MIN=$(awk "BEGIN { m = (${DEADLINE_S:-560} - $SECONDS - 60) / 60; print (m > 1 ? m : 1) }")
step long_densenet121 $(awk "BEGIN { print int($LEFT_MIN * 60 + 45) }") env PYTHONPATH="benchmarks:${PYTHONPATH:-}" python3 \
    benchmarks/val_recipe.py "$WORK/lungsim1400" --model densenet121 \
    --train-extra "$WORK/lungsim-extra" --train-extra "$WORK/lungsim-extra2" \
    --out "$WORK/dn_long" --threads 4 --set train.device="$DEV" \
    --set train.workers=$LOADER_WORKERS --set train.epochs=$EPOCHS --set train.max_steps=0 \
    --set train.max_minutes=$LEFT_MIN
step long_test 120 "${LC[@]}" evaluate "$WORK/dn_long" --device "$DEV" --split test \
    --localisation-samples 0

# ---- what comes back -------------------------------------------------------------------------
tar -czf "$OUT/artifacts.tar.gz" -C "$WORK" --ignore-failed-read \
    dn/history.jsonl dn/eval/metrics.json r50/history.jsonl dn_ddp/history.jsonl \
    cnn_fp16/history.jsonl \
    gan/losses.jsonl gan_eval/metrics.json gan_eval/metrics.md sim_out/timeline.json \
    gan3d/losses.jsonl dn_long/history.jsonl dn_long/config.yaml dn_long/eval/metrics.json \
    2>>"$LOG"
