"""The general path: one full forward pass per candidate (any model)."""

from typing import Sequence

import keras
import tensorflow as tf

from keras_rso.evaluators.base import (LossFn, Trial, VariableChoice, batchnorm_layers,
                                       candidate_mapping, seed_states)


class FullForwardEvaluator:
    """Evaluates candidates with one full forward pass each (any model).

    Args:
        model: The Keras model being trained.
        variables: The searched variables.
        loss_fn: `loss_fn(y, y_pred, sample_weight) -> scalar`.
    """

    fast = False

    def __init__(self, model: keras.Model, variables: Sequence[keras.Variable],
                 loss_fn: LossFn):
        self.model = model
        self.variables = list(variables)
        self.loss_fn = loss_fn
        self.batchnorms = batchnorm_layers(model)
        self.state_variables = list(model.non_trainable_variables)
        self.seed_states = seed_states(self.state_variables)

    def forward(self, x):
        """A training-mode pass (its state updates apply unless in a scope)."""
        return self.model(x, training=True)

    def begin(self, x, y, sample_weight):
        """Base loss with the current weights (the caller keeps its updates)."""
        y_pred = self.forward(x)
        return self.loss_fn(y, y_pred, sample_weight), y_pred, (), ()

    def trial(self, v: VariableChoice, j, dw, fixed, carried, x, y, sample_weight):
        """The `Trial` of scalar `j` of variable `v` (an index, or a `OneOf`)
        at offset `dw`: two full forward passes."""
        candidates = {id(c[0]): c for c in candidate_mapping(self.variables, v, j, dw)}
        results = []
        for half in (1, 2):  # w + d_plus, then w - d_minus
            # The scope substitutes the candidate for the variable and
            # swallows every state update (BN moving statistics, seeds).
            # Every trainable variable is mapped, so that weight regularizers
            # (which read variables through the scope) see the candidate.
            mapping = [(w, candidates[id(w)][half] if id(w) in candidates
                        else tf.convert_to_tensor(w.value)) for w in self.variables]
            with keras.StatelessScope(state_mapping=mapping):
                y_pred = self.forward(x)
                loss = self.loss_fn(y, y_pred, sample_weight)
            results.append((loss, y_pred))
        (lp, yp), (lm, ym) = results
        return Trial(lp, yp, lm, ym, (), lambda _: (), lambda _: carried)
