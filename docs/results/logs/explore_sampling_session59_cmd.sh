cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_CPU_ALLOCATOR_USE_BFC=true TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
lscpu | grep "Model name"; date
taskset -c 0 python examples/mnist_rso.py --cycles 5 --batch-size 512 --weights-per-batch 64 \
  --sigma-scale 3 --final-fraction 0.3333 --balance-sigma --order random --step-rule parabolic \
  --pool-after 1,3 --sampling loss --seed 0 --validation-size 10000 --verbose 2 \
  --results /work/runs/mnist_b512_loss_pool13_seed0.json \
  --save /work/runs/mnist_b512_loss_pool13_seed0.keras
date
taskset -c 1 python examples/mnist_rso.py --cycles 5 --batch-size 512 --weights-per-batch 64 \
  --sigma-scale 3 --final-fraction 0.3333 --balance-sigma --order random --step-rule parabolic \
  --pool-after 1,3 --sampling uniform --seed 0 --validation-size 10000 --verbose 2 \
  --results /work/runs/mnist_b512_uniform_pool13_seed0.json \
  --save /work/runs/mnist_b512_uniform_pool13_seed0.keras
taskset -c 1 python examples/mnist_rso.py --cycles 5 --batch-size 1024 --weights-per-batch 64 \
  --sigma-scale 3 --final-fraction 0.3333 --balance-sigma --order random --step-rule parabolic \
  --pool-after 1,3 --sampling loss --seed 0 --validation-size 10000 --verbose 2 \
  --results /work/runs/mnist_b1024_loss_pool13_seed0.json \
  --save /work/runs/mnist_b1024_loss_pool13_seed0.keras
