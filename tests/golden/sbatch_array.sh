#!/bin/bash
# vidbench: 4 run(s), 2 recipes, seed(s) 0,1
# Written by `vidbench submit`. Safe to re-submit: a run with result.json is skipped, an interrupted run
# resumes from its run directory (SIGUSR1 120 s before the time limit: checkpoint, then requeue).
#SBATCH --job-name=vidbench-msrvtt
#SBATCH --array=0,2-3%2
#SBATCH --output=/scratch/runs/slurm/%x-%A_%a.out
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --mem=256G
#SBATCH --time=1-00:00:00
#SBATCH --partition=gpu
#SBATCH --account=vision
#SBATCH --qos=high
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --constraint=a100
#SBATCH --exclusive
set -euo pipefail

# array task id -> recipe, seed, run directory
RECIPES=(
    clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka  # 0
    clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka  # 1
    clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka  # 2
    clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka  # 3
)
SEEDS=(0 1 0 1)
RUN_DIRS=(
    /scratch/runs/clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka/seed0  # 0
    /scratch/runs/clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka/seed1  # 1
    /scratch/runs/clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka/seed0  # 2
    /scratch/runs/clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka/seed1  # 3
)
TASK="${SLURM_ARRAY_TASK_ID:-0}"
RECIPE="${RECIPES[$TASK]}"
SEED="${SEEDS[$TASK]}"
RUN_DIR="${RUN_DIRS[$TASK]}"

echo "vidbench: job ${SLURM_JOB_ID} task ${TASK} restart ${SLURM_RESTART_COUNT:-0}: ${RECIPE} seed ${SEED}"
if [ -f "${RUN_DIR}/result.json" ]; then
    echo "vidbench: ${RUN_DIR}/result.json exists; nothing to do"
    exit 0
fi
mkdir -p "${RUN_DIR}"
cd /opt/vidbench
module load cuda/12.1
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"

# One process per task: Lightning's SLURMEnvironment takes the ranks from SLURM. The log goes to the run directory.
srun --unbuffered --kill-on-bad-exit=1 --label --open-mode=append --output="${RUN_DIR}/slurm-%j.log" \
    /opt/vidbench/.venv/bin/python -m vidbench.cli run-task "${RECIPE}" "run.seed=${SEED}" paths.data_root=/datasets trainer.num_nodes=2 trainer.devices=4
