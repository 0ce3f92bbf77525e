cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2 TF_CPP_MIN_LOG_LEVEL=2
lscpu | grep "Model name"
date
taskset -c 0,1 python -m benchmarks.studies.importance_sampling \
  docs/results/models/mnist_fastest_pool13_seed0.keras --raw --trials 150 \
  --losses /work/runs/is_end_losses.npz --output /work/runs/importance_sampling_end_seed0.json
date
cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2 TF_CPP_MIN_LOG_LEVEL=2
lscpu | grep "Model name"
date
taskset -c 0,1 python -m benchmarks.studies.importance_sampling \
  /work/runs/sched_seed0_after_cycle2.keras --trials 150 \
  --losses /work/runs/is_early_losses.npz --output /work/runs/importance_sampling_after_cycle2_sched_seed0.json
date
