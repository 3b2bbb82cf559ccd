"""VGGish in Keras 3, with its pretrained weights copied from TF Hub's SavedModel by name.

VGGish is a VGG variant on log-mel patches [96, 64]: 3x3 convolutions (stride 1, 'same', ReLU)
in four groups each ended by 2x2 max pooling, then two 4096-wide ReLU layers and a 128-wide
embedding layer. The embedding is pre-activation: TF Hub's VGGish (like `vggish_slim.py`) has no
ReLU on fc2, so put a non-linearity (or just a linear head) on top yourself.

Its front end is YAMNet's with log(mel + 0.01): `vggish_front_end_params()`.
"""

from __future__ import annotations

import dataclasses

import keras

from speakergender.config import FrontEndParams
from speakergender.models import hub_weights

PATCH_FRAMES = 96
PATCH_BANDS = 64
EMBEDDING_SIZE = 128

# Convolution groups: (group name, filters, convolutions); each group ends in 2x2 max pooling.
CONV_GROUPS = (("conv1", 64, 1), ("conv2", 128, 1), ("conv3", 256, 2), ("conv4", 512, 2))
FC1_UNITS = 4096

# Keras layer path -> TF Hub scope (TF-Slim names: "weights" and "biases" below each scope).
HUB_SCOPES = {
    ("conv1",): "vggish/conv1",
    ("conv2",): "vggish/conv2",
    ("conv3", "conv3_1"): "vggish/conv3/conv3_1",
    ("conv3", "conv3_2"): "vggish/conv3/conv3_2",
    ("conv4", "conv4_1"): "vggish/conv4/conv4_1",
    ("conv4", "conv4_2"): "vggish/conv4/conv4_2",
    ("fc1", "fc1_1"): "vggish/fc1/fc1_1",
    ("fc1", "fc1_2"): "vggish/fc1/fc1_2",
    ("fc2",): "vggish/fc2",
}
HUB_WEIGHT_NAMES = {"kernel": "weights", "bias": "biases"}


def vggish_front_end_params(**overrides) -> FrontEndParams:
    """VGGish's log-mel: YAMNet's (25 ms / 10 ms, 64 bands 125-7500 Hz) with log(mel + 0.01).

    clip_seconds stays 0.975 s so one clip is one [96, 64] patch. DC removal stays on: VGGish does
    not do it, but recordings with a DC offset (as the shared corpus) need it.
    """
    return dataclasses.replace(FrontEndParams(log_offset=0.01), **overrides)


def _conv(name: str, filters: int) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)


def build_vggish(name: str = "vggish", width_divisor: int = 1) -> keras.Model:
    """Builds VGGish with freshly initialized weights.

    Args:
      name: model name.
      width_divisor: divides every layer's width but the embedding's; only to make tests fast.
        TF Hub's weights need 1.

    Returns:
      keras.Model float32 [batch, 96, 64] log-mel patches -> float32 [batch, 128] embeddings.
    """
    patches = keras.Input(shape=(PATCH_FRAMES, PATCH_BANDS), name="log_mel_patches")
    net = keras.layers.Reshape((PATCH_FRAMES, PATCH_BANDS, 1), name="add_channel")(patches)
    for group, (group_name, filters, convolutions) in enumerate(CONV_GROUPS, start=1):
        filters //= width_divisor
        if convolutions == 1:
            net = _conv(group_name, filters)(net)
        else:
            net = keras.Sequential(
                [_conv(f"{group_name}_{i}", filters) for i in range(1, convolutions + 1)],
                name=group_name)(net)
        net = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{group}")(net)
    # net has shape [batch, 6, 4, 512]; TF-Slim flattens NHWC in the same order as Keras.
    net = keras.layers.Flatten(name="flatten")(net)
    units = FC1_UNITS // width_divisor
    net = keras.Sequential([keras.layers.Dense(units, activation="relu", name="fc1_1"),
                            keras.layers.Dense(units, activation="relu", name="fc1_2")],
                           name="fc1")(net)
    embedding = keras.layers.Dense(EMBEDDING_SIZE, name="fc2")(net)
    return keras.Model(patches, embedding, name=name)


def vggish_blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """VGGish's layers by TF Hub scope, bottom to top: conv1, conv2, conv3, conv4, fc1, fc2.

    A group built as a nested model (conv3, conv4, fc1) is listed first, then its sublayers, so
    setting `trainable` on each in order unfreezes it even after the model was frozen as a whole.
    """
    present = {layer.name for layer in model.layers}
    blocks = []
    for name in ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2"):
        if name in present:
            layer = model.get_layer(name)
            blocks.append([layer, *getattr(layer, "layers", [])])
    return blocks


def _keras_weights(model: keras.Model) -> dict[str, keras.Variable]:
    """TF Hub variable name -> the Keras variable holding it."""
    weights = {}
    for path, scope in HUB_SCOPES.items():
        layer = model.get_layer(path[0])
        for name in path[1:]:
            layer = layer.get_layer(name)
        for attribute, hub_name in HUB_WEIGHT_NAMES.items():
            weights[f"{scope}/{hub_name}"] = getattr(layer, attribute)
    return weights


def hub_variable_names(model: keras.Model) -> list[str]:
    """TF Hub variable names of the model's weights."""
    return list(_keras_weights(model))


def load_vggish_weights_from_savedmodel(model: keras.Model,
                                        handle_or_path: str = hub_weights.VGGISH_HANDLE) -> None:
    """Copies VGGish's weights from a TF Hub SavedModel into a `build_vggish` model.

    Args:
      model: from `build_vggish`.
      handle_or_path: TF Hub or Kaggle URL, or a local SavedModel folder.

    Raises:
      BackboneDownloadError: the handle could not be downloaded.
      FileNotFoundError: a local path is not a SavedModel folder.
      KeyError, ValueError: the SavedModel does not hold VGGish's variables.
    """
    targets = _keras_weights(model)
    values = hub_weights.select_variables(hub_weights.read_variables(handle_or_path), targets)
    for name, variable in targets.items():
        hub_weights.assign(variable, values[name], name)
