"""YAMNet in Keras 3, with its pretrained weights read from a TFLite file or a TF Hub SavedModel.

YAMNet is MobileNet v1 on log-mel patches [96, 64] (0.96 s at a 10 ms hop): a 3x3 convolution
then 13 depthwise-separable blocks, each convolution followed by batch norm (center only) and
ReLU, global average pooling to a 1024-d embedding and a dense layer to 521 AudioSet logits.
The blocks are nested Keras models named `layer1`..`layer14`, as in TF Hub's YAMNet, so the top
ones can be unfrozen by name.

Fine-tuning: set `trainable = False` on the BatchNormalization layers you keep frozen; in Keras 3
that also makes them normalize with their moving statistics in training, which small batches of
one corpus would otherwise overwrite. `yamnet_blocks` lists each block's layers for that purpose.

Weights come from either
- `load_yamnet_weights_from_tflite`: the TFLite model (hybrid int8 weights, batch norm folded
  into biases), dequantized; each batch norm becomes "add the folded bias", or
- `load_yamnet_weights_from_savedmodel`: a TF Hub handle or local SavedModel folder, copied by
  variable name (the names are in `HUB_NAMES`, the one map between the two layouts).
`YAMNetModule` is the network again as plain TensorFlow ops on variables with TF Hub's names and
TF Hub's interface (waveform -> scores, embeddings, log-mel); `convert_yamnet` exports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend.features import log_mel_spectrogram
from speakergender.models import hub_weights

PATCH_FRAMES = 96
PATCH_BANDS = 64
EMBEDDING_SIZE = 1024
NUM_CLASSES = 521
# TF Hub's YAMNet emits a patch every 0.48 s.
PATCH_HOP_SECONDS = 0.48
BATCH_NORM_EPSILON = 1e-4
BATCH_NORM_MOMENTUM = 0.99

# (kind, stride, filters) of layer1..layer14; every kernel is 3x3 with 'same' padding.
LAYER_DEFS = (
    ("conv", 2, 32),
    ("separable", 1, 64),
    ("separable", 2, 128),
    ("separable", 1, 128),
    ("separable", 2, 256),
    ("separable", 1, 256),
    ("separable", 2, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 2, 1024),
    ("separable", 1, 1024),
)
NUM_BLOCKS = len(LAYER_DEFS)

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


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        center=True, scale=False, epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM,
        name=name)


def _block(n: int, kind: str, stride: int, filters: int) -> keras.Sequential:
    if kind == "conv":
        convs = [("conv", keras.layers.Conv2D(filters, 3, strides=stride, padding="same",
                                              use_bias=False, name="conv"))]
    else:
        convs = [("depthwise_conv", keras.layers.DepthwiseConv2D(
                     3, strides=stride, padding="same", use_bias=False, name="depthwise_conv")),
                 ("pointwise_conv", keras.layers.Conv2D(
                     filters, 1, padding="same", use_bias=False, name="pointwise_conv"))]
    layers = []
    for name, conv in convs:
        layers += [conv, _batch_norm(f"{name}_bn"), keras.layers.ReLU(name=f"{name}_relu")]
    return keras.Sequential(layers, name=f"layer{n}")


def build_yamnet(name: str = "yamnet", include_logits: bool = True) -> keras.Model:
    """Builds YAMNet with freshly initialized weights.

    Args:
      name: model name.
      include_logits: keep the 521-class AudioSet layer.

    Returns:
      keras.Model on log-mel patches float32 [batch, 96, 64]. With include_logits, it returns
      {"embedding": float32 [batch, 1024], "logits": float32 [batch, 521]} (sigmoid gives
      YAMNet's scores); without, the embedding float32 [batch, 1024] alone.
    """
    patches = keras.Input(shape=(PATCH_FRAMES, PATCH_BANDS), name="log_mel_patches")
    net = keras.layers.Reshape((PATCH_FRAMES, PATCH_BANDS, 1), name="add_channel")(patches)
    for n, (kind, stride, filters) in enumerate(LAYER_DEFS, start=1):
        net = _block(n, kind, stride, filters)(net)
    # net has shape [batch, 3, 2, 1024]
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(net)
    if not include_logits:
        return keras.Model(patches, embedding, name=name)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(embedding)
    return keras.Model(patches, {"embedding": embedding, "logits": logits}, name=name)


def yamnet_blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """The layers of layer1..layer14, bottom to top, for unfreezing the top N blocks.

    Each list holds the block (a nested Keras model) first, then its sublayers, so setting
    `trainable` on each in order (False on BatchNormalization to keep it in inference mode)
    unfreezes the block even when the model was frozen as a whole before.

    Args:
      model: from `build_yamnet`, or cut from it by `backbones.feature_extractor`.

    Returns:
      one list of layers per block the model holds (14 for the whole network).
    """
    present = {layer.name for layer in model.layers}
    blocks = []
    for n in range(1, NUM_BLOCKS + 1):
        if f"layer{n}" in present:
            block = model.get_layer(f"layer{n}")
            blocks.append([block, *block.layers])
    return blocks


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


def load_yamnet_weights_from_savedmodel(model: keras.Model,
                                        handle_or_path: str = hub_weights.YAMNET_HANDLE) -> None:
    """Copies YAMNet's weights from a TF Hub SavedModel into a `build_yamnet` model.

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
    set_yamnet_weights(model, hub_weights.select_variables(variables, hub_variable_names(model)))


# ---------------------------------------------------------------------------------------------
# TF Hub's interface: waveform -> (scores, embeddings, log-mel)


def pad_waveform(waveform: tf.Tensor, front_end: FrontEndParams,
                 patch_hop_seconds: float = PATCH_HOP_SECONDS) -> tf.Tensor:
    """Zero-pads the end to at least one patch plus a whole number of patch hops, as YAMNet does.

    Args:
      waveform: float32 [samples].
      front_end: its clip_samples is one patch of waveform (15600 samples for 96 frames).
      patch_hop_seconds: hop between patches.

    Returns:
      float32 [padded samples].
    """
    patch_samples = front_end.clip_samples
    hop_samples = int(round(patch_hop_seconds * front_end.sample_rate))
    samples = tf.shape(waveform)[0]
    beyond_first = tf.maximum(samples, patch_samples) - patch_samples
    hops = (beyond_first + hop_samples - 1) // hop_samples
    return tf.pad(waveform, [[0, patch_samples + hops * hop_samples - samples]])


def waveform_to_patches(
        waveform: tf.Tensor, front_end: FrontEndParams,
        patch_hop_seconds: float = PATCH_HOP_SECONDS) -> tuple[tf.Tensor, tf.Tensor]:
    """TF Hub YAMNet's framing: pad, log-mel of the whole waveform, then overlapping patches.

    The waveform is used as given (no DC removal), as TF Hub's YAMNet does.

    Args:
      waveform: float32 [samples] at front_end.sample_rate.
      front_end: log-mel parameters; clip_frames is the patch length in frames.
      patch_hop_seconds: hop between patches.

    Returns:
      (log_mel float32 [frames, bands], patches float32 [patches, clip_frames, bands]).
    """
    padded = pad_waveform(waveform, front_end, patch_hop_seconds)
    log_mel = log_mel_spectrogram(padded, front_end)
    hop_frames = int(round(patch_hop_seconds / front_end.stft_hop_seconds))
    patches = tf.signal.frame(log_mel, front_end.clip_frames, hop_frames, axis=0)
    return log_mel, patches


class YAMNetModule(tf.Module):
    """YAMNet with TF Hub's interface and variable names, in plain TensorFlow ops.

    `__call__(waveform)` takes float32 [samples] at 16 kHz in [-1, 1] and returns
    (scores [patches, 521], embeddings [patches, 1024], log_mel_spectrogram [frames, 64]);
    `class_map_path()` returns the class map CSV's path. Its variables are named as TF Hub's
    ("layer1/conv/kernel", ...), so `load_yamnet_weights_from_savedmodel` reads a saved copy.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], class_map_csv: str | Path,
                 front_end: FrontEndParams | None = None):
        super().__init__(name="yamnet")
        self._front_end = front_end or FrontEndParams()
        # Moving statistics are not trained; the rest may be fine-tuned from the reloaded copy.
        self._weights = {
            name: tf.Variable(value, name=name, trainable="moving_" not in name)
            for name, value in weights.items()}
        self._class_map_asset = tf.saved_model.Asset(str(class_map_csv))

    @tf.function(input_signature=[])
    def class_map_path(self) -> tf.Tensor:
        return self._class_map_asset.asset_path

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32)])
    def __call__(self, waveform):
        log_mel, patches = waveform_to_patches(waveform, self._front_end)
        scores, embeddings = self.scores_and_embeddings(patches)
        return scores, embeddings, log_mel

    def _batch_norm(self, net: tf.Tensor, prefix: str) -> tf.Tensor:
        w = self._weights
        return tf.nn.batch_normalization(
            net, w[f"{prefix}/bn/moving_mean"], w[f"{prefix}/bn/moving_variance"],
            offset=w[f"{prefix}/bn/beta"], scale=None, variance_epsilon=BATCH_NORM_EPSILON)

    def scores_and_embeddings(self, patches: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """float32 [batch, 96, 64] -> (scores [batch, 521], embeddings [batch, 1024])."""
        w = self._weights
        net = patches[..., tf.newaxis]
        for n, (kind, stride, _) in enumerate(LAYER_DEFS, start=1):
            if kind == "conv":
                net = tf.nn.conv2d(net, w[f"layer{n}/conv/kernel"], stride, "SAME")
                net = tf.nn.relu(self._batch_norm(net, f"layer{n}/conv"))
                continue
            net = tf.nn.depthwise_conv2d(net, w[f"layer{n}/depthwise_conv/depthwise_kernel"],
                                         [1, stride, stride, 1], "SAME")
            net = tf.nn.relu(self._batch_norm(net, f"layer{n}/depthwise_conv"))
            net = tf.nn.conv2d(net, w[f"layer{n}/pointwise_conv/kernel"], 1, "SAME")
            net = tf.nn.relu(self._batch_norm(net, f"layer{n}/pointwise_conv"))
        embeddings = tf.reduce_mean(net, axis=[1, 2])
        logits = tf.matmul(embeddings, w["dense/kernel"]) + w["dense/bias"]
        return tf.sigmoid(logits), embeddings
