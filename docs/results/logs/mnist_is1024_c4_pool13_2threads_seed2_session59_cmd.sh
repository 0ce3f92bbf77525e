cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_CPU_ALLOCATOR_USE_BFC=true TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2
lscpu | grep "Model name"; git -C /work/main log --oneline -1; date
taskset -c 0,1 python examples/mnist_rso.py --cycles 4 --batch-size 1024 --weights-per-batch 64 \
  --sigma-scale 3 --final-fraction 0.3333 --balance-sigma --order random --step-rule parabolic \
  --pool-after 1,3 --sampling loss --seed 2 --validation-size 10000 --verbose 2 \
  --results docs/results/mnist_is1024_c4_pool13_2threads_seed2.json \
  --save docs/results/models/mnist_is1024_c4_pool13_2threads_seed2.keras \
  --backup-dir docs/results/backups/mnist_is1024_c4_pool13_2threads_seed2 --backup-every 25
date
