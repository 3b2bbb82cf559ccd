"""Shared fixtures: the optional ../shared corpus and small synthetic WAV corpora."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_CORPUS = SHARED_DIR / "data" / "audiomnist-az-dev"
SHARED_YAMNET_TFLITE = SHARED_DIR / "models" / "yamnet" / "yamnet.tflite"


@pytest.fixture(scope="session")
def shared_corpus_dir() -> Path:
    """The shared 40-speaker AudioMNIST-layout corpus; skips where ../shared is absent."""
    if not (SHARED_CORPUS / "data").is_dir():
        pytest.skip(f"shared corpus not found at {SHARED_CORPUS}")
    return SHARED_CORPUS


@pytest.fixture(scope="session")
def yamnet_tflite_path() -> Path:
    """The shared YAMNet TFLite weights; skips where ../shared is absent."""
    if not SHARED_YAMNET_TFLITE.is_file():
        pytest.skip(f"YAMNet TFLite weights not found at {SHARED_YAMNET_TFLITE}")
    return SHARED_YAMNET_TFLITE


@pytest.fixture
def server():
    """A file server on 127.0.0.1 for download tests (`local_http.FileServer`)."""
    from local_http import FileServer

    with FileServer() as running:
        yield running
