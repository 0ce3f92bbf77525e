"""keras_rso: train Keras models without gradients, by random search (RSO).

Implements Tripathi & Singh, "RSO: A Gradient Free Sampling Based Approach
For Training Deep Neural Networks" (arXiv:2005.05955) as a Keras 3 trainer.
"""

from keras_rso import callbacks
from keras_rso import constraints
from keras_rso import datasets
from keras_rso import losses
from keras_rso import memory
from keras_rso import models
from keras_rso import sampling
from keras_rso.errors import NonFiniteLossError
from keras_rso.model import RSOModel
from keras_rso.optimizer import RSO

__version__ = "0.1.0"

__all__ = ["RSO", "RSOModel", "NonFiniteLossError", "callbacks", "constraints", "datasets",
           "losses", "memory", "models", "sampling"]
