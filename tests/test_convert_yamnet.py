"""convert_yamnet: TFLite -> SavedModel of the Keras YAMNet with TF Hub's interface, read back."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.convert_yamnet import main
from speakergender.models import hub_weights
from speakergender.models.yamnet import build_yamnet
from speakergender.models.yamnet_hub import YAMNetHub, waveform_to_patches
from speakergender.models.yamnet_weights import (get_yamnet_weights,
                                                 load_yamnet_weights_from_savedmodel,
                                                 load_yamnet_weights_from_tflite)

pytestmark = pytest.mark.shared

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def converted(yamnet_tflite_path, tmp_path_factory) -> Path:
    """The shared TFLite file converted once (class map taken from beside it)."""
    output = tmp_path_factory.mktemp("convert") / "yamnet"
    assert main(["--tflite", str(yamnet_tflite_path), "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def tflite_model(yamnet_tflite_path) -> keras.Model:
    model = build_yamnet()
    load_yamnet_weights_from_tflite(model, yamnet_tflite_path)
    return model


@pytest.fixture(scope="module")
def hub_model(converted):
    import tensorflow_hub as hub
    return hub.load(str(converted))


@pytest.fixture(scope="module")
def class_names(hub_model) -> list[str]:
    with open(hub_model.class_map_path().numpy().decode()) as file:
        return [row["display_name"] for row in csv.DictReader(file)]


def test_hub_interface(hub_model, class_names, converted):
    assert len(class_names) == 521 and class_names[0] == "Speech"
    assert not list(converted.parent.glob(".yamnet.*")), "staging folder left behind"
    # Short waveforms are padded to one 0.96 s patch; longer ones get a patch every 0.48 s.
    for samples, patches in [(0, 1), (1000, 1), (15600, 1), (15601, 2), (2 * SAMPLE_RATE, 4)]:
        scores, embeddings, log_mel = hub_model(tf.zeros([samples]))
        assert scores.shape == (patches, 521)
        assert embeddings.shape == (patches, 1024)
        assert log_mel.shape == (96 + 48 * (patches - 1), 64)


def _top(scores: np.ndarray, class_names: list[str], count: int) -> list[str]:
    return [class_names[i] for i in np.argsort(scores.mean(axis=0))[::-1][:count]]


def test_known_signals(hub_model, class_names):
    """YAMNet's own export checks: the expected class among the clip's top 10."""
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    rng = np.random.default_rng(51773)
    cases = {
        "Silence": np.zeros_like(t),
        "White noise": rng.uniform(-1, 1, t.size),
        "Sine wave": np.sin(2 * np.pi * 440 * t),
    }
    for expected, waveform in cases.items():
        scores = hub_model(tf.constant(waveform, tf.float32))[0].numpy()
        assert expected in _top(scores, class_names, 10), (expected, _top(scores, class_names, 10))


def _speech(corpus_dir: Path, count: int) -> list[np.ndarray]:
    soundfile = pytest.importorskip("soundfile")
    paths = sorted((corpus_dir / "data").glob("*/*.wav"))
    waveforms = []
    for path in paths[::len(paths) // count][:count]:  # spread over the speakers
        waveform, _ = soundfile.read(path, dtype="float32")
        waveforms.append(waveform - waveform.mean())
    return waveforms


# The export wraps the Keras model itself, so on CPU its outputs equal the Keras model's exactly;
# the tolerances leave room for graph-mode kernels that differ from eager ones.
SCORE_TOLERANCE = 1e-6
EMBEDDING_TOLERANCE = 1e-5  # embeddings reach about 3
LOG_MEL_TOLERANCE = 1e-5


def test_outputs_on_speech_match_keras(hub_model, tflite_model, class_names, yamnet_tflite_path,
                                       shared_corpus_dir):
    """The reloaded SavedModel = the exported module in memory = the Keras model on its patches."""
    in_memory = YAMNetHub(tflite_model, yamnet_tflite_path.parent / "yamnet_class_map.csv")
    speech_on_top = 0
    for waveform in _speech(shared_corpus_dir, 6):
        outputs = [t.numpy() for t in hub_model(tf.constant(waveform))]
        for reloaded, exported in zip(outputs, in_memory(tf.constant(waveform))):
            np.testing.assert_allclose(reloaded, exported, atol=SCORE_TOLERANCE)
        scores, embeddings, log_mel = outputs
        expected_log_mel, patches = waveform_to_patches(tf.constant(waveform), FrontEndParams())
        expected = tflite_model(patches, training=False)
        np.testing.assert_allclose(log_mel, expected_log_mel, atol=LOG_MEL_TOLERANCE)
        np.testing.assert_allclose(scores, tf.sigmoid(expected["logits"]), atol=SCORE_TOLERANCE)
        np.testing.assert_allclose(embeddings, expected["embedding"], atol=EMBEDDING_TOLERANCE)
        speech_on_top += _top(scores, class_names, 1) == ["Speech"]
    assert speech_on_top >= 5


def test_savedmodel_loader_reads_the_converted_folder(converted, tflite_model):
    """The converted folder holds the Keras variable paths; the loader maps them back."""
    names = set(hub_weights.read_variables(str(converted)))
    assert len(names) == 110 and {"layer14/pointwise_conv_bn/moving_variance",
                                  "layer2/depthwise_conv/kernel", "logits/bias"} <= names
    model = build_yamnet()
    load_yamnet_weights_from_savedmodel(model, str(converted))
    loaded, expected = get_yamnet_weights(model), get_yamnet_weights(tflite_model)
    assert loaded.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)
    patches = np.log(np.random.default_rng(0).gamma(1.0, 0.1, (4, 96, 64)) + 0.001)
    np.testing.assert_array_equal(model(patches)["logits"], tflite_model(patches)["logits"])


def test_overwrite_replaces_an_existing_folder(yamnet_tflite_path, tmp_path, capsys):
    output = tmp_path / "yamnet"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    assert main(["--tflite", str(yamnet_tflite_path), "--output", str(output)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["--tflite", str(yamnet_tflite_path), "--output", str(output),
                 "--overwrite"]) == 0
    assert (output / "saved_model.pb").is_file() and not (output / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yamnet"]


def test_errors_are_reported_without_traceback(yamnet_tflite_path, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["--tflite", str(tmp_path / "missing.tflite"), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "no TFLite file" in err and "Traceback" not in err

    bad_map = tmp_path / "classes.csv"
    bad_map.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    assert main(["--tflite", str(yamnet_tflite_path), "--output", str(output),
                 "--class-map", str(bad_map)]) == 1
    assert "521 classes" in capsys.readouterr().err

    not_yamnet = tmp_path / "other.tflite"
    not_yamnet.write_bytes(b"not a flatbuffer")
    assert main(["--tflite", str(not_yamnet), "--output", str(output),
                 "--class-map", str(yamnet_tflite_path.parent / "yamnet_class_map.csv")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.csv", "other.tflite"]
