"""YAMNet in Keras: architecture, name map, weight loading, and agreement with the TFLite model."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend.features import log_mel_spectrogram
from speakergender.models import hub_weights
from speakergender.models.backbones import BACKBONES, feature_extractor, unfreeze_top_blocks
from speakergender.models.yamnet import (BATCH_NORM_EPSILON, NUM_BLOCKS, build_yamnet,
                                         yamnet_blocks)
from speakergender.models.yamnet_hub import YAMNetHub
from speakergender.models.yamnet_weights import (HUB_NAMES, get_yamnet_weights,
                                                 hub_variable_names,
                                                 load_yamnet_weights_from_savedmodel,
                                                 load_yamnet_weights_from_tflite,
                                                 open_tflite_interpreter, read_tflite_weights,
                                                 set_yamnet_weights)

SPEECH = 0  # index of "Speech" in yamnet_class_map.csv
WINDOW_SAMPLES = 15600
WINDOW_HOP_SAMPLES = 7800


def _random_patches(count: int, seed: int = 0) -> np.ndarray:
    """Log-mel-like patches: log of positive values, as the front end gives."""
    rng = np.random.default_rng(seed)
    return np.log(rng.gamma(1.0, 0.1, size=(count, 96, 64)) + 0.001).astype(np.float32)


def _scores(model: keras.Model, patches: np.ndarray) -> np.ndarray:
    logits = model.predict(patches, batch_size=64, verbose=0)["logits"]
    return tf.sigmoid(logits).numpy()


def _randomize_batch_norm(model: keras.Model, seed: int = 1) -> None:
    """Non-trivial moving statistics, so a mix-up of BN variables would show."""
    rng = np.random.default_rng(seed)
    weights = get_yamnet_weights(model)
    for name, value in weights.items():
        if name.endswith(("moving_mean", "beta")):
            weights[name] = rng.normal(0, 0.1, value.shape).astype(np.float32)
        elif name.endswith("moving_variance"):
            weights[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
    set_yamnet_weights(model, weights)


@pytest.fixture(scope="module")
def tflite_model(yamnet_tflite_path: Path) -> keras.Model:
    model = build_yamnet()
    load_yamnet_weights_from_tflite(model, yamnet_tflite_path)
    return model


# --- architecture ----------------------------------------------------------------------------


def test_architecture_matches_yamnet():
    model = build_yamnet()
    assert model.count_params() == 3_751_369  # YAMNet's parameter count
    outputs = model(np.zeros((2, 96, 64), np.float32))
    assert outputs["embedding"].shape == (2, 1024)
    assert outputs["logits"].shape == (2, 521)
    names = [layer.name for layer in model.layers]
    assert names[2:2 + NUM_BLOCKS] == [f"layer{n}" for n in range(1, NUM_BLOCKS + 1)]
    assert [layer.name for layer in model.get_layer("layer1").layers] == [
        "conv", "conv_bn", "conv_relu"]
    assert [layer.name for layer in model.get_layer("layer14").layers] == [
        "depthwise_conv", "depthwise_conv_bn", "depthwise_conv_relu",
        "pointwise_conv", "pointwise_conv_bn", "pointwise_conv_relu"]
    batch_norms = [layer for block in yamnet_blocks(model) for layer in block
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 27
    assert all(bn.center and not bn.scale and bn.epsilon == BATCH_NORM_EPSILON
               for bn in batch_norms)


def test_embedding_only_model():
    model = build_yamnet(include_logits=False)
    assert model(np.zeros((3, 96, 64), np.float32)).shape == (3, 1024)
    assert not any(name.startswith("dense/") for name in hub_variable_names(model))


def test_hub_name_table_covers_every_weight_once():
    model = build_yamnet()
    names = hub_variable_names(model)
    assert len(names) == len(set(names)) == len(model.weights) == 110
    assert {name.split("/", 1)[1] for name in names if name.startswith("layer14/")} == {
        hub for (sublayer, _), hub in HUB_NAMES.items() if not sublayer.startswith("conv")}


def test_keras_save_and_load_round_trip(tmp_path):
    model = build_yamnet()
    _randomize_batch_norm(model)
    path = tmp_path / "yamnet.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    patches = _random_patches(2)
    np.testing.assert_allclose(reloaded(patches)["logits"], model(patches)["logits"], atol=1e-6)


# --- fine-tuning helpers ---------------------------------------------------------------------


def test_unfreeze_top_blocks_keeps_batch_norm_in_inference_mode():
    spec = BACKBONES["yamnet"]
    backbone = spec.build()
    _randomize_batch_norm(backbone)
    patches = _random_patches(4)
    unfreeze_top_blocks(backbone, spec, 2)
    trainable = {variable.path for variable in backbone.trainable_weights}
    assert trainable == {"layer13/depthwise_conv/kernel", "layer13/pointwise_conv/kernel",
                         "layer14/depthwise_conv/kernel", "layer14/pointwise_conv/kernel"}
    # Frozen batch norm uses its moving statistics even in training mode.
    np.testing.assert_allclose(backbone(patches, training=True),
                               backbone(patches, training=False), atol=1e-6)
    unfreeze_top_blocks(backbone, spec, 0)
    assert not backbone.trainable_weights


def test_blocks_unfreeze_a_backbone_frozen_as_a_whole():
    """The trainer's pattern: freeze the nested backbone, later unfreeze layer by layer."""
    backbone = BACKBONES["yamnet"].build()
    inputs = keras.Input((96, 64))
    model = keras.Model(inputs, keras.layers.Dense(1)(backbone(inputs)))
    backbone.trainable = False
    assert len(model.trainable_weights) == 2
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    for block in yamnet_blocks(backbone)[-1:]:
        for layer in block:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    assert {v.path for v in backbone.trainable_weights} == {
        "layer14/depthwise_conv/kernel", "layer14/pointwise_conv/kernel"}


def test_feature_extractor_cuts_at_a_block_and_shares_its_weights():
    backbone = BACKBONES["yamnet"].build()
    _randomize_batch_norm(backbone)
    cut = feature_extractor(backbone, "layer7")
    patches = _random_patches(2)
    expected = backbone.get_layer("add_channel")(patches)
    for n in range(1, 8):
        expected = backbone.get_layer(f"layer{n}")(expected)
    np.testing.assert_allclose(cut(patches), expected, atol=1e-6)
    assert [block[0].name for block in yamnet_blocks(cut)] == [f"layer{n}" for n in range(1, 8)]
    assert cut.count_params() < backbone.count_params() / 5
    assert feature_extractor(backbone, "embedding") is backbone
    with pytest.raises(ValueError, match="no layer 'layer15'; choose one of add_channel, layer1"):
        feature_extractor(backbone, "layer15")


def test_unfreezing_counts_blocks_below_the_cut():
    spec = BACKBONES["yamnet"]
    cut = feature_extractor(spec.build(), "layer7")
    unfreeze_top_blocks(cut, spec, 1)
    assert {v.path for v in cut.trainable_weights} == {
        "layer7/depthwise_conv/kernel", "layer7/pointwise_conv/kernel"}


# --- SavedModel loading ----------------------------------------------------------------------


class _Variables(tf.Module):
    """A SavedModel holding only named variables, as TF Hub's YAMNet holds them."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str):
        super().__init__()
        self.weights = [tf.Variable(value, name=prefix + name) for name, value in weights.items()]


@pytest.mark.parametrize("prefix", ["", "yamnet_frames/"])
def test_savedmodel_variables_load_by_name(tmp_path, prefix):
    source = build_yamnet()
    _randomize_batch_norm(source)
    tf.saved_model.save(_Variables(get_yamnet_weights(source), prefix), str(tmp_path))
    patches = _random_patches(3)
    expected = source(patches)
    for include_logits in (True, False):
        model = build_yamnet(include_logits=include_logits)
        load_yamnet_weights_from_savedmodel(model, str(tmp_path))
        outputs = model(patches)
        embedding = outputs["embedding"] if include_logits else outputs
        np.testing.assert_array_equal(embedding, expected["embedding"])
        if include_logits:
            np.testing.assert_array_equal(outputs["logits"], expected["logits"])


def test_exported_keras_model_reads_back_by_keras_variable_path(tmp_path):
    """The layout `convert_yamnet` writes: the Keras model itself inside a tf.Module."""
    source = build_yamnet()
    _randomize_batch_norm(source)
    class_map = tmp_path / "classes.csv"
    class_map.write_text("index,mid,display_name\n")
    saved = tmp_path / "saved"
    tf.saved_model.save(YAMNetHub(source, class_map), str(saved))
    names = set(hub_weights.read_variables(str(saved)))
    assert {"layer1/conv/kernel", "layer1/conv_bn/beta", "layer2/depthwise_conv/kernel",
            "logits/kernel"} <= names and len(names) == 110
    expected = get_yamnet_weights(source)
    for include_logits in (True, False):
        model = build_yamnet(include_logits=include_logits)
        load_yamnet_weights_from_savedmodel(model, str(saved))
        for name, value in get_yamnet_weights(model).items():
            np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_savedmodel_missing_variables_are_named(tmp_path):
    weights = get_yamnet_weights(build_yamnet())
    del weights["layer7/pointwise_conv/kernel"]
    tf.saved_model.save(_Variables(weights, ""), str(tmp_path))
    with pytest.raises(KeyError, match="layer7/pointwise_conv/kernel"):
        load_yamnet_weights_from_savedmodel(build_yamnet(), str(tmp_path))


def test_select_variables_tolerates_scopes_and_keras_numbering():
    variables = {"yamnet_frames/dense_1/kernel": np.ones(1), "layer11/conv/kernel": np.zeros(1)}
    selected = hub_weights.select_variables(variables, ["dense/kernel", "layer11/conv/kernel"])
    assert selected["dense/kernel"][0] == 1 and selected["layer11/conv/kernel"][0] == 0
    with pytest.raises(KeyError, match="layer1/conv/kernel"):  # layer11 is not layer1
        hub_weights.select_variables(variables, ["layer1/conv/kernel"])
    with pytest.raises(KeyError, match="ambiguous"):
        hub_weights.select_variables({"a/dense/kernel": 1, "b/dense/kernel": 2}, ["dense/kernel"])


def test_missing_local_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a URL nor an existing folder"):
        load_yamnet_weights_from_savedmodel(build_yamnet(), str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="not a SavedModel folder"):
        load_yamnet_weights_from_savedmodel(build_yamnet(), str(tmp_path))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_download_advice(message: str, url: str) -> None:
    assert url in message
    assert "--backbone-handle /path/to/folder" in message
    assert "python -m speakergender.convert_yamnet" in message


def test_unreachable_handle_raises_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    url = f"http://127.0.0.1:{_closed_port()}/google/yamnet/1"
    with pytest.raises(hub_weights.BackboneDownloadError, match="Connection refused") as error:
        load_yamnet_weights_from_savedmodel(build_yamnet(), url)
    _assert_download_advice(str(error.value), url)


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_error(403, "Forbidden")

    def log_message(self, *args):
        pass


def test_forbidden_handle_raises_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/google/yamnet/1"
        with pytest.raises(hub_weights.BackboneDownloadError, match="403") as error:
            BACKBONES["yamnet"].load_weights(BACKBONES["yamnet"].build(), url)
        _assert_download_advice(str(error.value), url)
    finally:
        server.shutdown()
        server.server_close()


# --- TFLite weights --------------------------------------------------------------------------


@pytest.mark.shared
def test_tflite_weights_cover_the_network(yamnet_tflite_path):
    weights = read_tflite_weights(yamnet_tflite_path)
    assert sorted(weights) == sorted(hub_variable_names(build_yamnet()))
    assert weights["layer1/conv/kernel"].shape == (3, 3, 1, 32)
    assert weights["layer14/depthwise_conv/depthwise_kernel"].shape == (3, 3, 1024, 1)
    assert weights["dense/kernel"].shape == (1024, 521)
    # Batch norm was folded: it is left as "add the folded bias".
    assert not weights["layer5/pointwise_conv/bn/moving_mean"].any()
    np.testing.assert_allclose(weights["layer5/pointwise_conv/bn/moving_variance"],
                               1 - BATCH_NORM_EPSILON)


@pytest.mark.shared
def test_backbone_spec_loads_tflite(yamnet_tflite_path, tflite_model):
    spec = BACKBONES["yamnet"]
    assert spec.front_end.feature_shape == (96, 64) and spec.embedding_size == 1024
    backbone = spec.build()
    spec.load_weights(backbone, str(yamnet_tflite_path))
    patches = _random_patches(2)
    np.testing.assert_array_equal(backbone(patches), tflite_model(patches)["embedding"])


# --- agreement with the TFLite interpreter on real speech -------------------------------------


def _speech_windows(corpus_dir: Path, every: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """15600-sample windows (hop 7800) of every `every`-th recording, mean removed.

    Returns:
      (windows float32 [N, 15600], clip index int [N], whether each window carries speech [N]:
      it is within the front end's crop gate of its recording's loudest window, the windows
      training draws from).
    """
    soundfile = pytest.importorskip("soundfile")
    paths = sorted((corpus_dir / "data").glob("*/*.wav"))[::every]
    windows, clips = [], []
    for clip, path in enumerate(paths):
        waveform, sample_rate = soundfile.read(path, dtype="float32")
        assert sample_rate == 16000
        waveform = waveform - waveform.mean()  # the corpus carries a DC offset of about -0.085
        waveform = np.pad(waveform, (0, max(0, WINDOW_SAMPLES - waveform.size)))
        for start in range(0, waveform.size - WINDOW_SAMPLES + 1, WINDOW_HOP_SAMPLES):
            windows.append(waveform[start:start + WINDOW_SAMPLES])
            clips.append(clip)
    windows, clips = np.stack(windows), np.array(clips)
    levels_db = 10.0 * np.log10(np.mean(np.square(windows), axis=1) + 1e-12)
    loudest_db = np.array([levels_db[clips == clip].max() for clip in clips])
    speech = levels_db >= loudest_db - FrontEndParams().crop_gate_db
    return windows, clips, speech


def _interpreter_outputs(tflite_path: Path, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The TFLite model's (scores [N, 521], log-mel patches [N, 96, 64])."""
    interpreter = open_tflite_interpreter(tflite_path)
    waveform_input = interpreter.get_input_details()[0]["index"]
    scores_output, patch_output = (d["index"] for d in interpreter.get_output_details())
    scores, patches = [], []
    for window in windows:
        interpreter.set_tensor(waveform_input, window[np.newaxis])
        interpreter.invoke()
        scores.append(interpreter.get_tensor(scores_output)[0])
        patches.append(interpreter.get_tensor(patch_output))
    return np.stack(scores), np.stack(patches)


def _check_agreement(model: keras.Model, tflite_path: Path, corpus_dir: Path, every: int,
                     min_float_agreement: float) -> None:
    windows, clips, speech = _speech_windows(corpus_dir, every)
    reference, interpreter_patches = _interpreter_outputs(tflite_path, windows)
    on_patches = _scores(model, interpreter_patches)
    float_patches = log_mel_spectrogram(tf.constant(windows), FrontEndParams()).numpy()
    on_float = _scores(model, float_patches)

    top1_patches = np.mean(on_patches.argmax(1) == reference.argmax(1))
    diff_patches = np.mean(np.abs(on_patches - reference))
    float_agrees = on_float.argmax(1) == reference.argmax(1)
    top1_float = np.mean(float_agrees[speech])
    diff_float = np.mean(np.abs(on_float - reference))
    speech_windows = np.mean(on_float.argmax(1) == SPEECH)
    clip_scores = np.stack([on_float[clips == c].mean(0) for c in np.unique(clips)])
    speech_clips = np.mean(clip_scores.argmax(1) == SPEECH)
    print(f"\n{len(windows)} windows of {len(np.unique(clips))} clips: "
          f"interpreter's patch: top-1 agreement {top1_patches:.2%}, mean |score diff| "
          f"{diff_patches:.2g}; float front end: top-1 agreement {top1_float:.2%} on the "
          f"{speech.sum()} speech windows ({float_agrees.mean():.2%} on all), mean |score "
          f"diff| {diff_float:.2g}; Speech on top: {speech_windows:.2%} of windows, "
          f"{speech_clips:.2%} of clips (TFLite: {np.mean(reference.argmax(1) == SPEECH):.2%} "
          f"of windows)")
    assert top1_patches >= 0.995
    assert diff_patches < 1e-4
    assert top1_float >= min_float_agreement
    assert speech_windows >= 0.85
    assert speech_clips >= 0.9


@pytest.mark.shared
def test_agrees_with_tflite_on_speech(tflite_model, yamnet_tflite_path, shared_corpus_dir):
    _check_agreement(tflite_model, yamnet_tflite_path, shared_corpus_dir, every=15,
                     min_float_agreement=0.99)


@pytest.mark.shared
@pytest.mark.slow
def test_agrees_with_tflite_on_the_whole_corpus(tflite_model, yamnet_tflite_path,
                                                shared_corpus_dir):
    # Measured 99.35% on 3075 speech windows; 98.70% on all 3233: the misses are mostly quiet
    # windows of pauses (median 11 dB under their clip's loudest) where the TFLite front end's
    # on-the-fly int8 quantization moves the log-mel most.
    _check_agreement(tflite_model, yamnet_tflite_path, shared_corpus_dir, every=1,
                     min_float_agreement=0.99)
