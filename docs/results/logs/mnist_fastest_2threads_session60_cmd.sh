# Session 60: `--preset fastest` timed on both cores, nothing else running,
# seeds 0, 1, 2 one after another (AMD EPYC, AVX-512). One log per seed.
cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_CPU_ALLOCATOR_USE_BFC=true TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2
for seed in 0 1 2; do
  name=mnist_fastest_2threads_seed$seed
  log=docs/results/logs/${name}_session60.log
  { lscpu | grep "Model name"; grep -o -m1 avx512f /proc/cpuinfo; git -C /work/main log --oneline -1; date; } > $log
  taskset -c 0,1 python examples/mnist_rso.py --preset fastest --seed $seed --validation-size 10000 --verbose 2 \
    --results docs/results/$name.json --save docs/results/models/$name.keras \
    --backup-dir docs/results/backups/$name --backup-every 25 >> $log 2>&1
  date >> $log
done
