"""YAMNet's pretrained weights, read into a `build_yamnet` model by TF Hub variable name.

Every weight is keyed by its name in TF Hub's YAMNet ("layer1/conv/kernel", "dense/bias"; the
map from Keras layers is `HUB_NAMES`), and comes from either
- `load_yamnet_weights_from_tflite`: the TFLite model (hybrid int8 weights, batch norm folded
  into biases), dequantized; each batch norm becomes "add the folded bias", or
- `load_yamnet_weights_from_savedmodel`: a TF Hub handle or local SavedModel folder, copied by
  variable name. It reads TF Hub's YAMNet (TF Hub's names under an outer scope) as well as a
  SavedModel wrapping the Keras model itself, as `convert_yamnet` writes, whose variables carry
  the Keras variable paths ("layer1/conv_bn/beta", "logits/kernel").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from speakergender.models import hub_weights
from speakergender.models.yamnet import BATCH_NORM_EPSILON, LAYER_DEFS

# Keras (sublayer, weight) inside block "layer{n}" -> TF Hub variable name below "layer{n}/";
# and the logits layer's weights -> TF Hub names (its Dense was left auto-named "dense").
HUB_NAMES = {
    ("conv", "kernel"): "conv/kernel",
    ("conv_bn", "beta"): "conv/bn/beta",
    ("conv_bn", "moving_mean"): "conv/bn/moving_mean",
    ("conv_bn", "moving_variance"): "conv/bn/moving_variance",
    ("depthwise_conv", "kernel"): "depthwise_conv/depthwise_kernel",
    ("depthwise_conv_bn", "beta"): "depthwise_conv/bn/beta",
    ("depthwise_conv_bn", "moving_mean"): "depthwise_conv/bn/moving_mean",
    ("depthwise_conv_bn", "moving_variance"): "depthwise_conv/bn/moving_variance",
    ("pointwise_conv", "kernel"): "pointwise_conv/kernel",
    ("pointwise_conv_bn", "beta"): "pointwise_conv/bn/beta",
    ("pointwise_conv_bn", "moving_mean"): "pointwise_conv/bn/moving_mean",
    ("pointwise_conv_bn", "moving_variance"): "pointwise_conv/bn/moving_variance",
}
HUB_LOGITS_NAMES = {"kernel": "dense/kernel", "bias": "dense/bias"}


def _conv_names(kind: str) -> tuple[str, ...]:
    return ("conv",) if kind == "conv" else ("depthwise_conv", "pointwise_conv")


def _keras_weights(model: keras.Model) -> dict[str, keras.Variable]:
    """TF Hub variable name -> the Keras variable holding it, for every weight of the model."""
    weights = {}
    for n, (kind, _, _) in enumerate(LAYER_DEFS, start=1):
        block = model.get_layer(f"layer{n}")
        for conv in _conv_names(kind):
            for sublayer in (conv, f"{conv}_bn"):
                layer = block.get_layer(sublayer)
                for (hub_layer, attribute), hub_name in HUB_NAMES.items():
                    if hub_layer == sublayer:
                        weights[f"layer{n}/{hub_name}"] = getattr(layer, attribute)
    if any(layer.name == "logits" for layer in model.layers):
        logits = model.get_layer("logits")
        for attribute, hub_name in HUB_LOGITS_NAMES.items():
            weights[hub_name] = getattr(logits, attribute)
    return weights


def hub_variable_names(model: keras.Model) -> list[str]:
    """TF Hub variable names of the model's weights (without logits if it has none)."""
    return list(_keras_weights(model))


def get_yamnet_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights keyed by TF Hub variable name (see `HUB_NAMES`)."""
    return {name: np.asarray(variable.numpy()) for name, variable in _keras_weights(model).items()}


def set_yamnet_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Assigns weights keyed by TF Hub variable name; every weight of the model must be given.

    Raises:
      KeyError: a weight is missing.
      ValueError: a weight has the wrong shape.
    """
    targets = _keras_weights(model)
    missing = [name for name in targets if name not in weights]
    if missing:
        raise KeyError(f"no value for YAMNet weight(s) {', '.join(missing[:5])}")
    for name, variable in targets.items():
        hub_weights.assign(variable, weights[name], name)


# ---------------------------------------------------------------------------------------------
# TFLite


def open_tflite_interpreter(tflite_path: str | Path,
                            default_delegates: bool = True) -> tf.lite.Interpreter:
    """A tf.lite.Interpreter with tensors allocated.

    Args:
      tflite_path: the .tflite file.
      default_delegates: False reads constant tensors without XNNPACK repacking them.
    """
    kwargs = {}
    if not default_delegates:
        kwargs["experimental_op_resolver_type"] = (
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    # tf.lite.Interpreter warns that it moves to the ai_edge_litert package; it still works.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        interpreter = tf.lite.Interpreter(model_path=str(tflite_path), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _dequantize(details: dict, value: np.ndarray) -> np.ndarray:
    quantization = details["quantization_parameters"]
    scales = np.asarray(quantization["scales"], dtype=np.float32)
    if not np.issubdtype(value.dtype, np.integer):
        return value.astype(np.float32)
    if scales.size == 0:
        raise ValueError(f"TFLite tensor {details['name']!r} is {value.dtype} without scales")
    zero_points = np.asarray(quantization["zero_points"], dtype=np.float32)
    if scales.size > 1:  # one scale per channel along quantized_dimension
        shape = [1] * value.ndim
        shape[quantization["quantized_dimension"]] = -1
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return ((value.astype(np.float32) - zero_points) * scales).astype(np.float32)


def read_tflite_weights(tflite_path: str | Path) -> dict[str, np.ndarray]:
    """YAMNet's weights from its TFLite file, dequantized, in Keras layouts, by TF Hub name.

    Tensors are found by following the graph, not by their names (fused tensors carry
    misleading names): the convolutions run in layer order after the front end (which uses only
    FULLY_CONNECTED ops), and the logits layer is the FULLY_CONNECTED fed by the global MEAN.
    Batch norm is folded into each convolution's kernel and bias there, so every batch norm is
    set to "add the bias": beta = folded bias, moving mean 0, moving variance 1 - epsilon.

    Args:
      tflite_path: YAMNet's .tflite file (float32 waveform [1, 15600] in, scores out).

    Returns:
      {TF Hub variable name: float32 ndarray in Keras layout}.

    Raises:
      ValueError: the file does not hold YAMNet's graph.
    """
    interpreter = open_tflite_interpreter(tflite_path, default_delegates=False)
    tensors = {details["index"]: details for details in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # no public API lists a graph's ops
    producer = {int(output): op for op in ops for output in op["outputs"]}

    def constant(index: int) -> np.ndarray:
        op = producer.get(int(index))
        if op is not None and op["op_name"] == "DEQUANTIZE":  # int8 weights dequantized at run
            index = op["inputs"][0]
        return _dequantize(tensors[int(index)], interpreter.get_tensor(int(index)))

    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    expected = [("DEPTHWISE_CONV_2D" if conv == "depthwise_conv" else "CONV_2D", n, conv)
                for n, (kind, _, _) in enumerate(LAYER_DEFS, start=1) for conv in _conv_names(kind)]
    if [op["op_name"] for op in convs] != [op_name for op_name, _, _ in expected]:
        raise ValueError(f"{tflite_path}: the convolutions are not YAMNet's "
                         f"({len(convs)} found, {len(expected)} expected)")
    weights = {}
    for op, (_, n, conv) in zip(convs, expected):
        _, kernel_index, bias_index = op["inputs"][:3]
        # TFLite kernels are [out, h, w, in], depthwise [1, h, w, channels]; Keras wants
        # [h, w, in, out] and [h, w, channels, 1].
        kernel = constant(kernel_index).transpose(1, 2, 3, 0)
        bias = constant(bias_index)
        hub = {conv_key[1]: f"layer{n}/{name}" for conv_key, name in HUB_NAMES.items()
               if conv_key[0] in (conv, f"{conv}_bn")}
        weights[hub["kernel"]] = kernel
        weights[hub["beta"]] = bias
        weights[hub["moving_mean"]] = np.zeros_like(bias)
        weights[hub["moving_variance"]] = np.full_like(bias, 1.0 - BATCH_NORM_EPSILON)

    dense = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"
             and producer.get(int(op["inputs"][0]), {}).get("op_name") == "MEAN"]
    if len(dense) != 1:
        raise ValueError(f"{tflite_path}: found no single logits layer after the global pooling")
    _, kernel_index, bias_index = dense[0]["inputs"][:3]
    weights[HUB_LOGITS_NAMES["kernel"]] = constant(kernel_index).T  # [out, in] -> [in, out]
    weights[HUB_LOGITS_NAMES["bias"]] = constant(bias_index)
    return weights


def load_yamnet_weights_from_tflite(model: keras.Model, tflite_path: str | Path) -> None:
    """Loads YAMNet's TFLite weights (see `read_tflite_weights`) into a `build_yamnet` model.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not YAMNet.
    """
    if not Path(tflite_path).is_file():
        raise FileNotFoundError(f"no TFLite file at {tflite_path}")
    set_yamnet_weights(model, read_tflite_weights(tflite_path))


def _select_savedmodel_weights(variables: Mapping[str, np.ndarray],
                               model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by TF Hub name, from a SavedModel's variables in either layout.

    TF Hub's YAMNet names its variables as `HUB_NAMES` ("layer1/conv/bn/beta"); a SavedModel
    wrapping a `build_yamnet` model names them by Keras variable path ("layer1/conv_bn/beta").
    The layouts differ in every batch norm, depthwise kernel and logits weight, so a SavedModel
    matches one of them whole or neither.

    Raises:
      KeyError: neither layout is complete (the message lists what TF Hub's layout misses).
    """
    targets = _keras_weights(model)
    try:
        return hub_weights.select_variables(variables, targets)
    except KeyError as hub_layout_error:
        keras_paths = {name: variable.path for name, variable in targets.items()}
        try:
            by_path = hub_weights.select_variables(variables, keras_paths.values())
        except KeyError:
            raise hub_layout_error from None
    return {name: by_path[path] for name, path in keras_paths.items()}


def load_yamnet_weights_from_savedmodel(model: keras.Model,
                                        handle_or_path: str = hub_weights.YAMNET_HANDLE) -> None:
    """Copies YAMNet's weights from a SavedModel into a `build_yamnet` model.

    Args:
      model: from `build_yamnet` (with or without logits).
      handle_or_path: TF Hub or Kaggle URL, or a local SavedModel folder (for example one written
        by `python -m speakergender.convert_yamnet`).

    Raises:
      BackboneDownloadError: the handle could not be downloaded.
      FileNotFoundError: a local path is not a SavedModel folder.
      KeyError, ValueError: the SavedModel does not hold YAMNet's variables.
    """
    variables = hub_weights.read_variables(handle_or_path)
    set_yamnet_weights(model, _select_savedmodel_weights(variables, model))
