"""Every model the product trains, behind one interface: build it, and how to train it.

`scratch` is the CNN of `scratch.py`. `yamnet` and `vggish` fine-tune a pretrained backbone:
first the new head alone, then the top blocks at a lower learning rate with batch norm kept in
inference mode (small batches would otherwise overwrite the pretrained statistics).
`yamnet-frozen` and `vggish-frozen` train the head on frozen features only. The head reads a
mid-level layer of the backbone (see `BackboneSpec.feature_layer`), pooled to each channel's
mean and standard deviation; the layers above it are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from speakergender.config import FrontEndParams, TrainParams
from speakergender.models.inputs import waveform_features
from speakergender.models.pooling import StatisticsPooling
from speakergender.models.scratch import build_scratch_cnn
from speakergender.models.stages import Stage

MODEL_KINDS = ("scratch", "yamnet", "yamnet-frozen", "vggish", "vggish-frozen")


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """How to build and train one kind of model."""

    # () -> keras.Model float32 [batch, clip_samples] -> logits [batch, 1], front end inside.
    build: Callable[[], keras.Model]
    stages: Callable[[keras.Model], list[Stage]]
    front_end: FrontEndParams


def backbone_name(kind: str) -> str | None:
    """"yamnet" for "yamnet" and "yamnet-frozen"; None for models without a backbone."""
    return None if kind == "scratch" else kind.removesuffix("-frozen")


def required_front_end(kind: str, front_end: FrontEndParams) -> FrontEndParams:
    """The front end a model kind must use: a backbone dictates its own features (the
    per-window normalisation stays the caller's choice).

    Raises:
      ValueError: the requested features cannot feed that backbone.
    """
    name = backbone_name(kind)
    if name is None:
        return front_end
    from speakergender.models.backbones import BACKBONES
    spec = BACKBONES[name].front_end
    if front_end.feature_type != spec.feature_type:
        raise ValueError(f"--model {kind} needs {spec.feature_type} features (its pretrained "
                         f"front end); got --features {front_end.feature_type}")
    return dataclasses.replace(spec, feature_normalization=front_end.feature_normalization)


def recipe(kind: str, front_end: FrontEndParams, params: TrainParams) -> ModelRecipe:
    """Builder and training stages for `kind` (one of MODEL_KINDS)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if kind == "scratch":
        return ModelRecipe(
            build=lambda: build_scratch_cnn(front_end, params.augment),
            stages=lambda model: [Stage("training", params.epochs, params.learning_rate)],
            front_end=front_end)
    return _backbone_recipe(kind, required_front_end(kind, front_end), params)


def _backbone_recipe(kind: str, front_end: FrontEndParams, params: TrainParams) -> ModelRecipe:
    from speakergender.models.backbones import BACKBONES, feature_extractor, unfreeze_top_blocks
    spec = BACKBONES[backbone_name(kind)]
    source = params.backbone_handle or spec.default_handle
    layer = params.backbone_layer or spec.feature_layer

    def build() -> keras.Model:
        backbone = spec.build()
        spec.load_weights(backbone, source)
        backbone = feature_extractor(backbone, layer)
        waveform, features = waveform_features(front_end, params.augment)
        x = backbone(features)
        if len(x.shape) == 4:
            x = StatisticsPooling(name="statistics_pooling")(x)
        # Pretrained features are unnormalised; a linear head on them learns slowly.
        x = keras.layers.LayerNormalization(name="head_norm")(x)
        x = keras.layers.Dropout(0.3, name="head_dropout")(x)
        logits = keras.layers.Dense(1, name="logits")(x)
        return keras.Model(waveform, logits, name=f"{kind.replace('-', '_')}_classifier")

    def freeze_backbone(model: keras.Model) -> None:
        _backbone_of(model).trainable = False

    def unfreeze_top(model: keras.Model) -> None:
        unfreeze_top_blocks(_backbone_of(model), spec, params.fine_tune_blocks)

    def stages(model: keras.Model) -> list[Stage]:
        head = Stage("head", params.epochs, params.learning_rate, freeze_backbone)
        if kind.endswith("-frozen") or params.fine_tune_epochs == 0:
            return [head]
        return [head, Stage("fine-tuning", params.fine_tune_epochs,
                            params.fine_tune_learning_rate, unfreeze_top)]

    return ModelRecipe(build=build, stages=stages, front_end=front_end)


def _backbone_of(model: keras.Model) -> keras.Model:
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name}: expected one nested backbone model, found {len(nested)}")
    return nested[0]
