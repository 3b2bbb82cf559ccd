"""YAMNet's architecture in Keras 3.

YAMNet is MobileNet v1 on log-mel patches [96, 64] (0.96 s at a 10 ms hop): a 3x3 convolution
then 13 depthwise-separable blocks, each convolution followed by batch norm (center only) and
ReLU, global average pooling to a 1024-d embedding and a dense layer to 521 AudioSet logits.
The blocks are nested Keras models named `layer1`..`layer14`, as in TF Hub's YAMNet, so the top
ones can be unfrozen by name.

Fine-tuning: set `trainable = False` on the BatchNormalization layers you keep frozen; in Keras 3
that also makes them normalize with their moving statistics in training, which small batches of
one corpus would otherwise overwrite. `yamnet_blocks` lists each block's layers for that purpose.

The pretrained weights are read by `yamnet_weights` (from the TFLite file or a SavedModel).
"""

from __future__ import annotations

import keras

PATCH_FRAMES = 96
PATCH_BANDS = 64
EMBEDDING_SIZE = 1024
NUM_CLASSES = 521
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
