import numpy as np
import pytest
import tensorflow as tf

from speakergender.frontend import branching


def _branch_ops(graph) -> list:
    return [op for op in graph.get_operations()
            if op.type in ("If", "StatelessIf", "Case", "StatelessCase")]


@pytest.mark.parametrize("take_true", [True, False])
def test_cond_gives_tf_cond_results_eagerly_and_traced(take_true):
    x = tf.constant([1.0, -2.0, 3.0])

    def pick(pred, x):
        return branching.cond(pred, lambda: (x * 2.0, tf.reduce_sum(x)),
                              lambda: (x - 1.0, tf.reduce_max(x)))

    expected = (x * 2.0, 2.0) if take_true else (x - 1.0, 3.0)
    for run in (pick, tf.function(pick)):
        values, summary = run(tf.constant(take_true), x)
        np.testing.assert_allclose(values.numpy(), np.asarray(expected[0]))
        assert float(summary) == expected[1]


def test_switch_case_picks_the_indexed_branch():
    traced = tf.function(lambda index: branching.switch_case(
        index, [lambda: tf.constant(10), lambda: tf.constant(20), lambda: tf.constant(30)]))
    assert [int(traced(tf.constant(i))) for i in range(3)] == [10, 20, 30]


def test_traced_branches_stay_unlowered_function_calls():
    # The attribute TensorFlow's lowering pass reads; lowered (true, the default), the executor
    # walks every node of the branch not taken.
    def both(pred, index):
        first = branching.cond(pred, lambda: tf.constant(1.0), lambda: tf.constant(2.0))
        second = branching.switch_case(index, [lambda: first, lambda: first + 1.0])
        return second

    graph = tf.function(both).get_concrete_function(
        tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.int32)).graph
    ops = _branch_ops(graph)
    assert len(ops) == 2
    assert all(op.get_attr("_lower_using_switch_merge") is False for op in ops)

    plain = tf.function(lambda pred: tf.cond(pred, lambda: 1.0, lambda: 2.0))
    plain_ops = _branch_ops(plain.get_concrete_function(tf.TensorSpec([], tf.bool)).graph)
    assert plain_ops[0].get_attr("_lower_using_switch_merge") is True
