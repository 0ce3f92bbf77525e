import numpy as np, keras, keras_rso
from keras_rso import datasets, models
(x, y), _ = datasets.load_mnist(limit=10)
model = models.mnist_paper_net(pool_after=(2, 4))
init = [v.numpy().copy() for v in model.trainable_variables]
trainer = keras_rso.RSOModel(model)
trainer(x[:1])
trainer.load_weights("/work/main/docs/results/backups/mnist_sched1024x2_2048x3_parabolic_seed0/latest.weights.h5", skip_mismatch=True)
changed = sum(not np.array_equal(a, v.numpy()) for a, v in zip(init, model.trainable_variables))
print("variables changed by the load:", changed, "of", len(init))
model.save("/work/runs/sched_seed0_after_cycle2.keras")
