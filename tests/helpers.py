"""Shared test helpers: Keras save/reload checks, a tiny trained model exported once per session,
training runs shared between test files, and running code in a fresh Python process.

Expensive artefacts (a trained model, its SavedModel, a training run) are built at most once per
pytest session and cached here, keyed by name, so every test file that needs one reuses it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Small enough to train in seconds on two shared CPU cores.
TINY_CORPUS = dict(female_speakers=3, male_speakers=3, clips_per_speaker=4, seconds=1.0)

_CACHE: dict[str, object] = {}


def cached(key: str, build):
    """`build()` once per session."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def built_once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """`build(folder)` once for the whole test run, however many pytest-xdist workers ask.

    The first worker to ask builds it under a file lock in the run's temporary folder, which
    every worker shares; the others wait for it and reuse the folder. A SavedModel on disk is
    as good as one built here, and each build costs a minute of the run's two cores.
    """
    def build_or_reuse():
        base = tmp_path_factory.getbasetemp()
        # Under xdist each worker's basetemp sits in the run's own folder; alone, in ours.
        root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        folder = root / f"shared-{name}"
        with open(root / f"shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / ".complete").exists():
                folder.mkdir(exist_ok=True)
                build(folder)
                (folder / ".complete").touch()
        return folder

    return cached(f"run:{name}", build_or_reuse)


def session_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder shared by every test file in this session."""
    return cached(f"dir:{name}", lambda: tmp_path_factory.mktemp(name))


# --- Keras round trips --------------------------------------------------------------------------


def assert_keras_round_trip(model: keras.Model, inputs: np.ndarray, directory: Path,
                            atol: float = 1e-6) -> keras.Model:
    """Saves `model` as .keras, reloads it (no custom_objects: registered classes only) and
    asserts the reloaded model gives the same outputs and the same config.

    Returns:
      The reloaded model.
    """
    path = Path(directory) / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    expected = np.asarray(model(inputs, training=False))
    actual = np.asarray(reloaded(inputs, training=False))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    assert [layer.get_config() for layer in reloaded.layers] == \
        [layer.get_config() for layer in model.layers]
    return reloaded


# --- corpora and a tiny trained model -----------------------------------------------------------


def synthetic_corpus(tmp_path_factory: pytest.TempPathFactory, name: str = "tiny",
                     **kwargs) -> Path:
    """A synthetic AudioMNIST-layout corpus (TINY_CORPUS unless overridden), written once."""
    from speakergender import synthetic

    options = {**TINY_CORPUS, **kwargs}
    key = f"corpus:{name}:{json.dumps(options, sort_keys=True)}"
    return cached(key, lambda: synthetic.write_corpus(
        tmp_path_factory.mktemp(f"corpus-{name}"), **options))


def trained_classifier(tmp_path_factory: pytest.TempPathFactory) -> keras.Model:
    """The scratch CNN fitted to a synthetic corpus for a few epochs (deterministic, seconds).

    Synthetic female and male voices differ in pitch and formants by construction, so even
    this short fit separates them; tests that need a model that tells them apart use it.
    """
    def train(folder: Path):
        from speakergender import corpora, pipeline, training
        from speakergender.config import FrontEndParams
        from speakergender.models.scratch import build_scratch_cnn

        front_end = FrontEndParams()
        table = corpora.load_corpus(synthetic_corpus(
            tmp_path_factory, "train", female_speakers=4, male_speakers=4,
            clips_per_speaker=4, seed=11)).table
        keras.utils.set_random_seed(0)
        model = build_scratch_cnn(front_end)
        training.compile_model(model, 1e-3)
        data = pipeline.make_dataset(
            table, front_end, training=True, batch_size=8, seed=0, cache=True,
            deterministic=True, sample_weights=pipeline.balancing_weights(table),
            skip_log=pipeline.SkipLog(os.devnull))
        model.fit(data, epochs=TRAIN_EPOCHS, verbose=0)
        # Twenty steps leave batch norm's moving statistics behind the final weights (in
        # inference mode every clip then scores male). Passes in training mode over the whole
        # training set, without gradient steps, bring them up to date.
        clips = np.concatenate([batch[0] for batch in pipeline.make_dataset(
            table, front_end, training=False, batch_size=64,
            skip_log=pipeline.SkipLog(os.devnull))])
        for _ in range(40):
            model(clips, training=True)
        model.save(folder / "trained.keras")

    # Trained once per test run; each worker loads it. Its layers are registered with Keras
    # when their module is imported, which a worker that did not train it may not have done.
    import speakergender.models.scratch  # noqa: F401

    return cached("trained_classifier", lambda: keras.saving.load_model(
        built_once_per_run(tmp_path_factory, "trained_classifier", train) / "trained.keras",
        compile=False))


TRAIN_EPOCHS = 5


def trained_module(tmp_path_factory: pytest.TempPathFactory, temperature: float = 1.0,
                   bias: float = 0.0):
    """A GenderClassifierModule around `trained_classifier` (a new module each call)."""
    from speakergender.config import FrontEndParams
    from speakergender.export import GenderClassifierModule

    return GenderClassifierModule(
        trained_classifier(tmp_path_factory), FrontEndParams(), temperature=temperature, bias=bias,
        config={"front_end": {"window_hop_seconds": FrontEndParams().window_hop_seconds},
                "note": "test model"})


def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`trained_module` exported once per test run; the model folder (holding version 1)."""
    def build(folder: Path):
        from speakergender.export import export_model

        export_model(trained_module(tmp_path_factory), folder / "tiny")

    return built_once_per_run(tmp_path_factory, "exported_model", build) / "tiny"


def untrained_exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, untrained scratch CNN exported once per test run (a second, different model)."""
    def build(folder: Path):
        from speakergender.config import FrontEndParams
        from speakergender.export import GenderClassifierModule, export_model
        from speakergender.models.scratch import build_scratch_cnn

        keras.utils.set_random_seed(1)
        module = GenderClassifierModule(build_scratch_cnn(FrontEndParams(), name="untrained"),
                                        FrontEndParams())
        export_model(module, folder / "untrained")

    return built_once_per_run(tmp_path_factory, "untrained_exported_model", build) / "untrained"


# --- training runs ------------------------------------------------------------------------------


CORRUPT_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 40


def train_run(tmp_path_factory: pytest.TempPathFactory, name: str, corpus: Path,
              *options: str) -> tuple[Path, Path, dict]:
    """`train.main` run once per test run with these options, in-process, on whichever worker
    asks first (`built_once_per_run`); `corpus` must be one every worker sees at the same path
    (`shared_corpus`).

    Returns:
      (output folder, TensorBoard log folder, metrics.json contents).
    """
    def build(folder: Path):
        from tensorflow.python.framework import config as tf_config

        from speakergender import train

        try:
            status = train.main(["--data-dir", str(corpus), "--output", str(folder / name),
                                 "--logdir", str(folder / f"{name}-logs"), "--batch-size", "8",
                                 "--quiet", *options])
        finally:
            # --deterministic turns op determinism on for the whole process; other tests
            # expect it off. (No public API turns it off.)
            tf_config.disable_op_determinism()
        assert status == 0

    folder = built_once_per_run(tmp_path_factory, f"train-{name}", build)
    output, logs = folder / name, folder / f"{name}-logs"
    return output, logs, json.loads((output / "metrics.json").read_text())


def shared_corpus(tmp_path_factory: pytest.TempPathFactory, name: str, corrupt: bool = False,
                  **kwargs) -> Path:
    """A synthetic corpus (TINY_CORPUS unless overridden) written once for the whole test run
    at one path, for training runs that any worker may build; with `corrupt`, speaker 01's
    clip 9_01_9.wav is replaced by CORRUPT_WAV."""
    from speakergender import synthetic

    def build(folder: Path):
        synthetic.write_corpus(folder / "corpus", **{**TINY_CORPUS, **kwargs})
        if corrupt:
            (folder / "corpus" / "data" / "01" / "9_01_9.wav").write_bytes(CORRUPT_WAV)

    return built_once_per_run(tmp_path_factory, f"corpus-{name}", build) / "corpus"


def corpus_with_corrupt_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """TINY_CORPUS plus one undecodable file in speaker 01's folder: (root, corrupt file)."""
    root = shared_corpus(tmp_path_factory, "with-corrupt", corrupt=True, seed=3)
    return root, root / "data" / "01" / "9_01_9.wav"


def folds_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """2-fold cross-validation, 2 epochs, on `corpus_with_corrupt_file`."""
    root, _ = corpus_with_corrupt_file(tmp_path_factory)
    return train_run(tmp_path_factory, "folds", root, "--epochs", "2", "--folds", "2",
                     "--condition-tests", "telephone")


DETERMINISTIC_OPTIONS = ("--epochs", "2", "--folds", "0", "--deterministic", "--seed", "3",
                         "--condition-tests", "none")


def holdout_run(tmp_path_factory: pytest.TempPathFactory, name: str = "holdout"
                ) -> tuple[Path, Path, dict]:
    """A deterministic hold-out run, 2 epochs, on the tiny corpus."""
    return train_run(tmp_path_factory, name, shared_corpus(tmp_path_factory, "tiny"),
                     *DETERMINISTIC_OPTIONS)


# --- fresh processes ----------------------------------------------------------------------------


def python_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_python(code: str, *args: str, timeout: float = 300, cwd: Path | None = None
               ) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; raises with its output when it fails."""
    result = subprocess.run([PYTHON, "-c", textwrap.dedent(code), *args], capture_output=True,
                            text=True, timeout=timeout, env=python_env(), cwd=cwd)
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr[-6000:]}")
    return result
