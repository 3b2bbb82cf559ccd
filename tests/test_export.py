"""SavedModel export: reloaded in a fresh process with TensorFlow alone, atomic and versioned."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

import helpers
import wavfiles
from speakergender import export, model_dirs, synthetic
from speakergender.config import FrontEndParams

PARAMS = FrontEndParams()
TEMPERATURE = 1.7
BIAS = 0.4
THREE_WINDOWS = PARAMS.clip_samples + 2 * PARAMS.window_hop_samples  # 30960 samples


@pytest.fixture(scope="module")
def module(tmp_path_factory) -> export.GenderClassifierModule:
    return helpers.trained_module(tmp_path_factory, temperature=TEMPERATURE, bias=BIAS)


@pytest.fixture(scope="module")
def model_dir(module, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("export") / "tiny"
    assert export.export_model(module, model_dir) == model_dir / "1"
    return model_dir


def _waveforms() -> np.ndarray:
    """float32 [4, THREE_WINDOWS]: a female and a male voice, noise, and silence."""
    rng = np.random.default_rng(5)
    voices = [synthetic.utterance(synthetic.speaker_voice(gender, rng), THREE_WINDOWS / 16000,
                                  16000, rng) for gender in ("female", "male")]
    noise = 0.1 * rng.standard_normal(THREE_WINDOWS)
    return np.stack([*voices, noise, np.zeros(THREE_WINDOWS)]).astype(np.float32)


@pytest.fixture(scope="module")
def wav_batch(tmp_path_factory) -> list[bytes]:
    """WAV files of several formats and one corrupt entry (index 2)."""
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(6)
    voice = synthetic.speaker_voice("female", rng)
    files = [
        wavfiles.write_wav(folder / "a.wav", synthetic.utterance(voice, 1.2, 16000, rng), 16000),
        wavfiles.write_wav(folder / "b.wav", synthetic.utterance(voice, 2.0, 44100, rng), 44100,
                           "PCM_24"),
        None,
        wavfiles.write_wav(folder / "d.wav", np.stack([synthetic.utterance(voice, 0.5, 8000, rng)]
                                                      * 2, axis=1), 8000, "FLOAT"),
    ]
    return [b"RIFF\x00\x10\x00\x00WAVEjunk" if f is None else f.read_bytes() for f in files]


RELOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

saved_dir, folder = sys.argv[1:3]
inputs = json.load(open(folder + "/inputs.json"))
loaded = tf.saved_model.load(saved_dir)
waveforms = tf.constant(np.load(folder + "/waveforms.npy"))
wav_bytes = tf.constant([open(path, "rb").read() for path in inputs["wav_files"]])
serving = loaded.signatures["serving_default"](waveform=waveforms)
wavs = loaded.signatures["classify_wav"](wav_bytes=wav_bytes)
metadata = loaded.signatures["metadata"]()
np.savez(folder + "/outputs.npz", **{"serving_" + k: v.numpy() for k, v in serving.items()},
         **{"wav_" + k: v.numpy() for k, v in wavs.items()})
print(json.dumps({
    "speakergender_imported": any(m.split(".")[0] == "speakergender" for m in sys.modules),
    "signatures": sorted(loaded.signatures),
    "temperature": float(loaded.temperature.numpy()),
    "bias": float(loaded.bias.numpy()),
    "config_json": metadata["config_json"].numpy().decode(),
    "sample_rate": int(metadata["sample_rate"]),
    "clip_samples": int(metadata["clip_samples"]),
    "threshold": float(metadata["threshold"]),
}))
"""


@pytest.fixture(scope="module")
def reloaded(model_dir, wav_batch, tmp_path_factory) -> tuple[dict, dict]:
    """Outputs of the SavedModel run in a fresh interpreter that imports only TensorFlow."""
    folder = tmp_path_factory.mktemp("reload")
    np.save(folder / "waveforms.npy", _waveforms())
    wav_files = []
    for index, contents in enumerate(wav_batch):
        wav_files.append(str(folder / f"{index}.wav"))
        Path(wav_files[-1]).write_bytes(contents)
    (folder / "inputs.json").write_text(json.dumps({"wav_files": wav_files}))
    result = helpers.run_python(RELOAD_SCRIPT, str(model_dir / "1"), str(folder), cwd=folder)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    # Our own file; string outputs come back as object arrays.
    outputs = dict(np.load(folder / "outputs.npz", allow_pickle=True))
    return info, outputs


def test_fresh_process_needs_only_tensorflow(reloaded):
    info, _ = reloaded
    assert info["speakergender_imported"] is False
    assert {"serving_default", "classify_wav", "metadata"} <= set(info["signatures"])


def test_reloaded_outputs_match_in_memory(module, reloaded, wav_batch):
    _, outputs = reloaded
    expected = module.serve_waveform(tf.constant(_waveforms()))
    for key in ("female_probability", "logits", "window_logits"):
        np.testing.assert_allclose(outputs[f"serving_{key}"], expected[key].numpy(), atol=1e-5,
                                   rtol=0)
    for key in ("label", "window_sounding", "window_count"):
        np.testing.assert_array_equal(outputs[f"serving_{key}"], expected[key].numpy())
    expected = module.classify_wav(tf.constant(wav_batch))
    for key in ("female_probability", "logits", "duration_seconds"):
        np.testing.assert_allclose(outputs[f"wav_{key}"], expected[key].numpy(), atol=1e-5,
                                   rtol=0)
    for key in ("label", "error", "window_count"):
        np.testing.assert_array_equal(outputs[f"wav_{key}"], expected[key].numpy())


def test_a_trained_model_tells_the_synthetic_voices_apart(reloaded):
    _, outputs = reloaded
    female, male, _, silent = outputs["serving_label"]
    assert (female, male, silent) == (b"female", b"male", b"no speech")


def test_classify_wav_reports_a_corrupt_entry_and_scores_the_others(reloaded):
    _, outputs = reloaded
    errors = [e.decode() for e in outputs["wav_error"]]
    assert errors[2] and not errors[0] and not errors[1] and not errors[3]
    assert outputs["wav_label"][2] == b""
    assert all(label in (b"female", b"male") for label in np.delete(outputs["wav_label"], 2))
    np.testing.assert_allclose(outputs["wav_duration_seconds"][[0, 1, 3]], [1.2, 2.0, 0.5],
                               atol=1e-3)


def test_calibration_and_metadata_are_stored(module, reloaded, tmp_path_factory):
    info, outputs = reloaded
    assert info["temperature"] == pytest.approx(TEMPERATURE)
    assert (info["sample_rate"], info["clip_samples"]) == (16000, 15600)
    assert info["threshold"] == pytest.approx(0.5)
    assert json.loads(info["config_json"])["note"] == "test model"
    assert info["bias"] == pytest.approx(BIAS)
    # The stored temperature divides the logits, then the bias is added: an uncalibrated twin
    # gives the raw logits.
    uncalibrated = helpers.trained_module(tmp_path_factory, temperature=1.0)
    raw = uncalibrated.serve_waveform(tf.constant(_waveforms()))["logits"].numpy()
    np.testing.assert_allclose(outputs["serving_logits"], raw / TEMPERATURE + BIAS, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(outputs["serving_female_probability"],
                               1 / (1 + np.exp(-(raw / TEMPERATURE + BIAS))), atol=1e-6)


def test_the_config_travels_as_an_asset_and_building_a_module_writes_no_file(
        model_dir, reloaded, tmp_path_factory, monkeypatch, tmp_path):
    info, _ = reloaded
    asset = model_dir / "1" / "assets" / export.CONFIG_ASSET
    assert asset.read_text() == info["config_json"]
    # Nothing outside the export is written for it (a temporary source for the asset was left
    # behind by every killed process).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    alive = helpers.trained_module(tmp_path_factory, temperature=2.0)
    assert not list(tmp_path.iterdir())
    del alive


def test_saved_model_cli_lists_the_signatures(model_dir):
    result = subprocess.run(
        [str(Path(helpers.PYTHON).parent / "saved_model_cli"), "show", "--dir",
         str(model_dir / "1"), "--all"],
        capture_output=True, text=True, timeout=300, env=helpers.python_env(), check=True)
    for name in ("serving_default", "classify_wav", "metadata"):
        assert f"signature_def['{name}']" in result.stdout
    assert "waveform" in result.stdout and "wav_bytes" in result.stdout


def test_graph_has_only_core_tensorflow_ops(model_dir):
    saved_model = saved_model_pb2.SavedModel.FromString(
        (model_dir / "1" / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops |= {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    assert {"RFFT", "MatMul", "DecodeRaw"} <= ops  # the front end and decoder are inside
    assert not [op for op in ops if op_def_registry.get(op) is None]
    assert not [op for op in ops if "PyFunc" in op]


def test_long_input_averages_its_windows(module):
    rng = np.random.default_rng(7)
    waveform = 0.1 * rng.standard_normal(THREE_WINDOWS).astype(np.float32)
    waveform[PARAMS.window_hop_samples:] *= 3  # windows with different content and levels
    outputs = module.serve_waveform(tf.constant(waveform[np.newaxis]))
    assert int(outputs["window_count"][0]) == 3
    assert outputs["window_sounding"].numpy().tolist() == [[True, True, True]]
    # Each window scored on its own, as the classifier sees it.
    hop, length = PARAMS.window_hop_samples, PARAMS.clip_samples
    clips = np.stack([waveform[i * hop:i * hop + length] for i in range(3)])
    # Each window loses its own mean.
    clips = tf.constant(clips - clips.mean(axis=1, keepdims=True))
    window_logits = module.classifier(clips).numpy()
    window_logits = window_logits[:, 0] / TEMPERATURE + BIAS
    np.testing.assert_allclose(outputs["window_logits"][0], window_logits, atol=1e-4)
    assert float(outputs["logits"][0]) == pytest.approx(window_logits.mean(), abs=1e-4)
    # A silent last window is not counted.
    waveform[2 * hop:] = 0.0
    waveform[length:] = 0.0
    outputs = module.serve_waveform(tf.constant(waveform[np.newaxis]))
    sounding = outputs["window_sounding"].numpy()[0]
    assert sounding.tolist() == [True, True, False]
    assert float(outputs["logits"][0]) == pytest.approx(
        float(np.mean(outputs["window_logits"][0][:2])), abs=1e-5)


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silence_is_no_speech(module, level):
    waveform = level * np.random.default_rng(8).standard_normal((1, 40000)).astype(np.float32)
    outputs = module.serve_waveform(tf.constant(waveform))
    assert outputs["label"].numpy().tolist() == [b"no speech"]
    assert np.isfinite(outputs["female_probability"].numpy()).all()


def test_failed_exports_leave_nothing_behind_and_versions_count_up(module, model_dir,
                                                                     monkeypatch):
    def leftovers():
        return sorted(p.name for p in model_dir.iterdir() if p.name != "1")

    # The reload check fails (no tolerance can be met): no version appears.
    with pytest.raises(export.ExportCheckError):
        export.export_model(module, model_dir, atol=-1.0)
    assert leftovers() == []

    # Saving dies midway, after writing part of the model.
    def broken_save(obj, export_dir, signatures=None, **kwargs):
        Path(export_dir, "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(tf.saved_model, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            export.export_model(module, model_dir)
    assert leftovers() == []

    assert export.export_model(module, model_dir) == model_dir / "2"
    assert leftovers() == ["2"]
    assert model_dirs.latest_version_dir(model_dir) == model_dir / "2"


def test_version_folders(tmp_path):
    for name in ("1", "3", "7x", ".export-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    assert model_dirs.next_version_dir(tmp_path) == tmp_path / "4"
    # Folder 3 is incomplete (no saved_model.pb), so version 1 is the latest complete one.
    assert model_dirs.latest_version_dir(tmp_path) == tmp_path / "1"
    assert model_dirs.latest_version_dir(tmp_path / "1") == tmp_path / "1"
    with pytest.raises(FileNotFoundError):
        model_dirs.latest_version_dir(tmp_path / "3")
