cd /work/main
export KERAS_HOME=/work/shared/datasets/keras TF_CPU_ALLOCATOR_USE_BFC=true
grep -m1 "model name" /proc/cpuinfo
echo "== one thread, core 0"; date
TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 taskset -c 0 python -m benchmarks.flop_limit --batch-size 2048 --repeats 10 --pool-after 1 3 --output docs/results/flop_limit_mnist_b2048_pool13_xeon_1thread.json
echo "== two threads, cores 0-1"; date
TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2 taskset -c 0,1 python -m benchmarks.flop_limit --batch-size 2048 --repeats 10 --pool-after 1 3 --output docs/results/flop_limit_mnist_b2048_pool13_xeon_2threads.json
date
