"""Loss evaluation for RSO trials: a general path and a fast path for chains.

A trial needs the loss at `W + dw e_j` and `W - dw e_j` for one scalar `j`
of one variable. Two evaluators provide it inside the traced train step:

* `FullForwardEvaluator` works for any model (subclassed, branching
  functional graphs, nested models): it runs the whole model once per
  candidate, with the candidate value substituted for the variable through
  `keras.StatelessScope`, so nothing is written to any variable.
* `ChainEvaluator` is used when the model is a chain of layers (Sequential,
  or a functional model whose layers each feed only the next). It caches the
  activation entering every layer once per batch and, for a trial in layer
  `i`, runs only layers `i..n` on both candidates stacked along the batch
  axis. For `Dense` and `Conv2D` weights the perturbed layer is not even
  recomputed: a single weight changes one output channel by `dw` times a
  slice of the input (a rank-one update), added to the cached
  pre-activation.

Both evaluators apply BatchNormalization's moving-statistics update exactly
once per batch (in `begin`, with the accepted weights) and never during a
trial. Random layers (Dropout, GaussianNoise, SpatialDropout, random
augmentation) draw the same numbers in every evaluation of a batch (common
random numbers): the base pass and both candidates of every trial see one
mask, drawn afresh for each batch, as they see the same images; see
`seed_states`. Layers that mix samples keep each candidate's batch statistics
apart: a plain BatchNormalization is computed directly on both stacked
candidates, each normalised by its own statistics, and anything unknown is
called once per candidate.

The package holds one concept per module: `base` (the protocol: `Trial`,
candidate values), `full_forward`, `chain`, `graph` (the residual fast path),
`topology` (which layers the fast paths understand, how layers connect) and
`rank_one` (the layer math of a one-weight change).
"""

from keras_rso.evaluators.base import (LossFn, OneOf, Trial, VariableChoice, batchnorm_layers,
                                       candidate_mapping, candidate_values, indices_of,
                                       is_local, replace_scalar, seed_states, split_offsets)
from keras_rso.evaluators.chain import ChainEvaluator
from keras_rso.evaluators.full_forward import FullForwardEvaluator
from keras_rso.evaluators.graph import GraphEvaluator, GraphNode, graph_nodes
from keras_rso.evaluators.topology import PER_SAMPLE_LAYERS, chain_layers, flat_biases

__all__ = ["ChainEvaluator", "FullForwardEvaluator", "GraphEvaluator", "GraphNode", "LossFn",
           "OneOf", "PER_SAMPLE_LAYERS", "Trial", "VariableChoice", "batchnorm_layers",
           "candidate_mapping", "candidate_values", "chain_layers", "flat_biases", "graph_nodes",
           "indices_of", "is_local", "replace_scalar", "seed_states", "split_offsets"]
