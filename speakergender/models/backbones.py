"""The pretrained backbones behind one interface: front end, builder, weight loader, blocks.

    spec = BACKBONES["yamnet"]
    backbone = spec.build()                        # [batch, 96, 64] -> [batch, embedding_size]
    spec.load_weights(backbone, source or spec.default_handle)
    features = feature_extractor(backbone, spec.feature_layer)   # up to a mid-level feature map
    for block in spec.blocks(features)[-n:]: ...   # unfreeze the top n blocks

`source` is a TF Hub / Kaggle URL, a local SavedModel folder, or (YAMNet only) a .tflite file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import keras

from speakergender.config import FrontEndParams
from speakergender.models import hub_weights, vggish, yamnet, yamnet_weights


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A pretrained embedding network and the features it was trained on."""

    name: str
    # clip_seconds is 0.975 so one clip's features are one [96, 64] patch.
    front_end: FrontEndParams
    embedding_size: int
    # () -> keras.Model float32 [batch, 96, 64] -> float32 [batch, embedding_size].
    build: Callable[[], keras.Model]
    # (model, source) -> None: copies the pretrained weights in.
    load_weights: Callable[[keras.Model, str], None]
    default_handle: str
    # model -> its blocks bottom to top, each a list of layers (a nested block model first);
    # blocks a truncated model (see feature_extractor) lacks are left out.
    blocks: Callable[[keras.Model], list[list[keras.layers.Layer]]]
    # The layer whose output the classifier's head reads by default. A mid-level feature map
    # carries a voice's character better than the top embedding, which was trained towards
    # AudioSet's classes: for YAMNet on the shared recordings, logistic regression on layer7's
    # pooled statistics reaches 0.96 speaker-disjoint balanced accuracy, on the embedding 0.88.
    feature_layer: str


def _is_tflite(source: str | Path) -> bool:
    return str(source).lower().endswith(".tflite")


def load_yamnet_weights(model: keras.Model, source: str | Path) -> None:
    """YAMNet weights from a .tflite file, or else a TF Hub handle or SavedModel folder."""
    if _is_tflite(source):
        yamnet_weights.load_yamnet_weights_from_tflite(model, source)
    else:
        yamnet_weights.load_yamnet_weights_from_savedmodel(model, str(source))


def load_vggish_weights(model: keras.Model, source: str | Path) -> None:
    """VGGish weights from a TF Hub handle or SavedModel folder."""
    if _is_tflite(source):
        raise ValueError(f"VGGish weights cannot be read from a TFLite file ({source}); pass a "
                         f"TF Hub handle or a SavedModel folder")
    vggish.load_vggish_weights_from_savedmodel(model, str(source))


BACKBONES = {
    "yamnet": BackboneSpec(
        name="yamnet",
        front_end=FrontEndParams.yamnet(),
        embedding_size=yamnet.EMBEDDING_SIZE,
        build=functools.partial(yamnet.build_yamnet, include_logits=False),
        load_weights=load_yamnet_weights,
        default_handle=hub_weights.YAMNET_HANDLE,
        blocks=yamnet.yamnet_blocks,
        feature_layer="layer7"),
    "vggish": BackboneSpec(
        name="vggish",
        front_end=vggish.vggish_front_end_params(),
        embedding_size=vggish.EMBEDDING_SIZE,
        build=vggish.build_vggish,
        load_weights=load_vggish_weights,
        default_handle=hub_weights.VGGISH_HANDLE,
        blocks=vggish.vggish_blocks,
        # By analogy with YAMNet (its weights cannot be had here to measure): the upper
        # convolutional group, before VGGish's fully connected layers.
        feature_layer="conv4"),
}


def feature_extractor(backbone: keras.Model, layer_name: str) -> keras.Model:
    """The backbone cut at `layer_name`: patches -> that layer's output, sharing its weights.

    Raises:
      ValueError: the backbone has no such top-level layer; the message lists those it has.
    """
    names = [layer.name for layer in backbone.layers]
    if layer_name not in names:
        raise ValueError(f"{backbone.name} has no layer {layer_name!r}; choose one of "
                         f"{', '.join(names[1:])}")
    if layer_name == names[-1]:
        return backbone
    return keras.Model(backbone.inputs, backbone.get_layer(layer_name).output, name=backbone.name)


def unfreeze_top_blocks(backbone: keras.Model, spec: BackboneSpec, count: int,
                        train_batch_norm: bool = False) -> None:
    """Freezes the backbone but its top `count` blocks; batch norm stays in inference mode.

    Compile the model again afterwards for the change to take effect.

    Args:
      backbone: from spec.build().
      spec: its BackboneSpec.
      count: blocks to unfreeze from the top (0 freezes everything).
      train_batch_norm: also let BatchNormalization layers train (and use batch statistics).
    """
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    blocks = spec.blocks(backbone)
    for block in blocks[-count:] if count > 0 else []:
        for layer in block:
            is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = train_batch_norm or not is_batch_norm
