#!/usr/bin/env bash
# GPU check, run once per session that is lent a GPU: training throughput of the paper-sized backbones
# (random init, no weights needed) and every tiny demo recipe trained and tested on the GPU for 1 epoch.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR]    (python3 with torch+CUDA, lightning, transformers, av, omegaconf)
set -uo pipefail
out="${1:-gpu_check_out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)"
for args in "--head meanp --precision bf16-mixed" "--head seqtransf --precision bf16-mixed" "--head meanp --precision 32"; do
    timeout 120 python3 benchmarks/bench_train.py --arch vitb32 --frames 12 --batch 128 --steps 10 --warmup 3 $args 2>&1 | tail -1
done
python3 -m vidbench.cli synth --out data/synth --seed 0 >/dev/null 2>&1 || echo "synth failed"
for r in clip4clip-meanp clip4clip-seqtransf drl-wti-seqtransf-cdcr eercf hcq-clip; do
    t0=$(date +%s)
    timeout 150 python3 -m vidbench.cli fit "${r}_tiny_8f_b64_synth-msrvtt" trainer.accelerator=gpu \
        trainer.precision=bf16-mixed trainer.max_epochs=1 data.num_workers=4 paths.runs_dir="$out/runs" --test \
        >"$out/$r.log" 2>&1
    rc=$?
    echo "$r: rc=$rc $(( $(date +%s) - t0 )) s; $(grep -h -o 't2v_R1[^,]*' "$out"/runs/${r}_tiny*/seed0/result.json 2>/dev/null | head -1)"
    [ $rc -ne 0 ] && tail -5 "$out/$r.log"
done
