"""`tf.cond` and `tf.switch_case` that, in a traced function, run only the branch taken.

In a `tf.function` (and so in tf.data maps and SavedModel signatures) TensorFlow lowers each
`If` / `Case` op to Switch and Merge nodes inlined into the caller's graph. The executor then
still visits every node of each branch not taken, passing "dead" tensors along; for the
decoder's and resampler's branches (hundreds of ops each, several of them nested) that walk
cost milliseconds a batch, more than the work done. An op left unlowered calls its branch
function instead, and only the taken one runs. The ops stay core TensorFlow ops (`If`,
`StatelessIf`, `Case`, `StatelessCase`): exported models load anywhere as before.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2

# The attribute cond_v2 sets to ask the graph optimizer to lower an op; absent or false, the
# op is kept as a function call.
_LOWER_ATTR = "_lower_using_switch_merge"
_BRANCH_OPS = frozenset({"If", "StatelessIf", "Case", "StatelessCase"})


def cond(pred, true_fn, false_fn):
    """`tf.cond(pred, true_fn, false_fn)`, kept as a function call when traced."""
    outputs = tf.cond(pred, true_fn, false_fn)
    _keep_unlowered(outputs)
    return outputs


def switch_case(branch_index, branch_fns):
    """`tf.switch_case(branch_index, branch_fns)`, kept as a function call when traced."""
    outputs = tf.switch_case(branch_index, branch_fns)
    _keep_unlowered(outputs)
    return outputs


def _keep_unlowered(outputs) -> None:
    if tf.executing_eagerly():
        return
    for tensor in tf.nest.flatten(outputs):
        # cond_v2 returns identities of the branch op's outputs.
        op = tensor.op
        candidates = [op] + [source.op for source in op.inputs]
        for candidate in candidates:
            if candidate.type in _BRANCH_OPS:
                # Private, but the only handle TensorFlow offers on this choice.
                candidate._set_attr(_LOWER_ATTR, attr_value_pb2.AttrValue(b=False))
                return
