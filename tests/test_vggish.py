"""VGGish in Keras, loaded from a stand-in of TF Hub's VGGish SavedModel (random weights).

TF Hub's VGGish cannot be downloaded here, so the stand-in has its interface (1-D waveform ->
embeddings [N, 128], one per 0.96 s, short clips padded) and its variable names and layouts
("vggish/conv3/conv3_1/weights" [3, 3, in, out], ...), computed with plain TensorFlow ops.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from speakergender.frontend.features import log_mel_spectrogram
from speakergender.models import hub_weights
from speakergender.models.backbones import (BACKBONES, feature_extractor, load_vggish_weights,
                                            unfreeze_top_blocks)
from speakergender.models.vggish import (build_vggish, hub_variable_names,
                                         load_vggish_weights_from_savedmodel,
                                         vggish_blocks, vggish_front_end_params)

FRONT_END = vggish_front_end_params()


def _stand_in_shapes(width_divisor: int) -> dict[str, tuple[int, ...]]:
    """TF Hub VGGish's variable shapes (TF-Slim layouts), every width but fc2's divided."""
    c1, c2, c3, c4, fc = (n // width_divisor for n in (64, 128, 256, 512, 4096))
    convs = {"conv1": (1, c1), "conv2": (c1, c2), "conv3/conv3_1": (c2, c3),
             "conv3/conv3_2": (c3, c3), "conv4/conv4_1": (c3, c4), "conv4/conv4_2": (c4, c4)}
    shapes = {}
    for scope, (inputs, outputs) in convs.items():
        shapes[f"vggish/{scope}/weights"] = (3, 3, inputs, outputs)
        shapes[f"vggish/{scope}/biases"] = (outputs,)
    for scope, (inputs, outputs) in {"fc1/fc1_1": (6 * 4 * c4, fc), "fc1/fc1_2": (fc, fc),
                                      "fc2": (fc, 128)}.items():
        shapes[f"vggish/{scope}/weights"] = (inputs, outputs)
        shapes[f"vggish/{scope}/biases"] = (outputs,)
    return shapes


def _patches(waveform: tf.Tensor) -> tf.Tensor:
    """VGGish's examples: log-mel framed into non-overlapping 0.96 s patches [N, 96, 64]."""
    samples = tf.shape(waveform)[0]
    waveform = tf.pad(waveform, [[0, tf.maximum(0, FRONT_END.clip_samples - samples)]])
    log_mel = log_mel_spectrogram(waveform, FRONT_END)
    return tf.signal.frame(log_mel, FRONT_END.clip_frames, FRONT_END.clip_frames, axis=0)


class StandInVGGish(tf.Module):
    """TF Hub VGGish's interface and variables, with random (He-scaled) weights."""

    def __init__(self, width_divisor: int = 1, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self._variables = []  # as TF Hub's export keeps them
        self._by_name = {}
        for name, shape in _stand_in_shapes(width_divisor).items():
            if name.endswith("weights"):
                fan_in = int(np.prod(shape[:-1]))
                value = (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)
            else:
                value = rng.normal(0, 0.05, shape).astype(np.float32)
            variable = tf.Variable(value, name=name)
            self._variables.append(variable)
            self._by_name[name] = variable

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32)])
    def __call__(self, waveform):
        return self.embed(_patches(waveform))

    def embed(self, patches):
        w = self._by_name
        net = patches[..., tf.newaxis]
        for group in ("conv1", "conv2", "conv3", "conv4"):
            scopes = [group] if group in ("conv1", "conv2") else [f"{group}/{group}_1",
                                                                   f"{group}/{group}_2"]
            for scope in scopes:
                net = tf.nn.conv2d(net, w[f"vggish/{scope}/weights"], 1, "SAME")
                net = tf.nn.relu(net + w[f"vggish/{scope}/biases"])
            net = tf.nn.max_pool2d(net, 2, 2, "SAME")
        net = tf.reshape(net, [tf.shape(net)[0], -1])
        for scope in ("fc1/fc1_1", "fc1/fc1_2"):
            net = tf.nn.relu(tf.matmul(net, w[f"vggish/{scope}/weights"])
                             + w[f"vggish/{scope}/biases"])
        return tf.matmul(net, w["vggish/fc2/weights"]) + w["vggish/fc2/biases"]


def _round_trip(tmp_path, width_divisor: int) -> None:
    stand_in = StandInVGGish(width_divisor)
    tf.saved_model.save(stand_in, str(tmp_path))
    rng = np.random.default_rng(1)
    # 2.5 s: two whole examples; 0.3 s: shorter than one, padded.
    waveforms = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (40000, 4800)]
    reloaded = tf.saved_model.load(str(tmp_path))

    model = build_vggish(width_divisor=width_divisor)
    load_vggish_weights_from_savedmodel(model, str(tmp_path))
    for waveform, examples in zip(waveforms, (2, 1)):
        expected = reloaded(tf.constant(waveform)).numpy()
        assert expected.shape == (examples, 128)
        embeddings = model.predict(_patches(tf.constant(waveform)), verbose=0)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(embeddings, expected, atol=1e-5 * scale, rtol=1e-4)


def test_loads_stand_in_savedmodel(tmp_path):
    _round_trip(tmp_path, width_divisor=8)


@pytest.mark.slow
def test_loads_full_size_stand_in_savedmodel(tmp_path):
    _round_trip(tmp_path, width_divisor=1)


def test_architecture_matches_vggish():
    model = build_vggish()
    assert model.count_params() == 72_141_184  # VGGish's parameter count
    assert model.output.shape == (None, 128)
    assert model.get_layer("fc2").activation is keras.activations.linear  # pre-activation
    assert len(hub_variable_names(model)) == len(model.weights) == 18


def test_front_end_is_vggish():
    assert FRONT_END.log_offset == 0.01
    assert FRONT_END.feature_shape == (96, 64)
    assert (FRONT_END.stft_window_seconds, FRONT_END.stft_hop_seconds) == (0.025, 0.010)
    assert (FRONT_END.mel_bands, FRONT_END.mel_min_hz, FRONT_END.mel_max_hz) == (64, 125, 7500)
    assert FRONT_END.magnitude_exponent == 1.0
    assert BACKBONES["vggish"].front_end == FRONT_END


def test_backbone_spec_dispatch(tmp_path):
    spec = BACKBONES["vggish"]
    assert spec.embedding_size == 128 and spec.default_handle == hub_weights.VGGISH_HANDLE
    with pytest.raises(ValueError, match="TFLite"):
        spec.load_weights(build_vggish(width_divisor=8), "vggish.tflite")
    stand_in = StandInVGGish(width_divisor=8, seed=3)
    tf.saved_model.save(stand_in, str(tmp_path))
    model = build_vggish(width_divisor=8)
    load_vggish_weights(model, str(tmp_path))
    patches = _patches(tf.zeros([16000]))
    np.testing.assert_allclose(model(patches), stand_in.embed(patches), rtol=1e-4, atol=1e-5)


def test_blocks_and_unfreezing():
    model = build_vggish(width_divisor=8)
    blocks = vggish_blocks(model)
    assert [[layer.name for layer in block] for block in blocks] == [
        ["conv1"], ["conv2"], ["conv3", "conv3_1", "conv3_2"], ["conv4", "conv4_1", "conv4_2"],
        ["fc1", "fc1_1", "fc1_2"], ["fc2"]]
    unfreeze_top_blocks(model, BACKBONES["vggish"], 2)
    assert {v.path for v in model.trainable_weights} == {
        "fc1/fc1_1/kernel", "fc1/fc1_1/bias", "fc1/fc1_2/kernel", "fc1/fc1_2/bias",
        "fc2/kernel", "fc2/bias"}


def test_the_head_reads_conv4_and_fine_tuning_counts_down_from_it():
    spec = BACKBONES["vggish"]
    model = build_vggish(width_divisor=8)
    cut = feature_extractor(model, spec.feature_layer)
    assert cut.output.shape == (None, 12, 8, 512 // 8)
    assert [block[0].name for block in vggish_blocks(cut)] == ["conv1", "conv2", "conv3", "conv4"]
    unfreeze_top_blocks(cut, spec, 1)
    assert {v.path for v in cut.trainable_weights} == {
        "conv4/conv4_1/kernel", "conv4/conv4_1/bias", "conv4/conv4_2/kernel",
        "conv4/conv4_2/bias"}
