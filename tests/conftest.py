"""Shared fixtures: the optional ../shared corpus, trained and exported tiny models and training
runs (built once per session), and the test scheduling on pytest-xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

import helpers

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_CORPUS = SHARED_DIR / "data" / "audiomnist-az-dev"
SHARED_YAMNET_TFLITE = SHARED_DIR / "models" / "yamnet" / "yamnet.tflite"

# Scheduling on pytest-xdist's workers (setup.cfg: `-n 4 --dist loadfile`): each test file
# is one unit of work, so its module fixtures are built once, on one worker. Files that train
# or export models start first, longest first, so that the workers finish at about the same
# time.
KILLED_RUN_TEST = "test_train.py::test_a_killed_run_resumes"
REPEATED_RUN_TEST = "test_train.py::test_deterministic_runs_repeat_exactly"
LONGEST_FILES_FIRST = ("test_train.py", "test_notebooks.py", KILLED_RUN_TEST,
                       REPEATED_RUN_TEST, "test_multicorpus.py", "test_backbone_training.py",
                       "test_evaluate.py", "test_export.py")
# Training runs and their corpora are built once for the whole run (tests/helpers.py), so the
# tests that read them may sit in any unit. The killed-run test trains alone, so it is a unit of
# its own; so is the repeated-run test, which trains the hold-out run a second time.
RUNS_WITH_FILE = {
    f"tests/{KILLED_RUN_TEST}": f"tests/{KILLED_RUN_TEST}",
    f"tests/{REPEATED_RUN_TEST}": f"tests/{REPEATED_RUN_TEST}",
}


def _unit_of_work(nodeid: str) -> str:
    return RUNS_WITH_FILE.get(nodeid, nodeid.split("::", 1)[0])


def pytest_collection_modifyitems(config, items):
    collected = {item.nodeid for item in items}
    files = {item.nodeid.split("::", 1)[0] for item in items}
    stale = [nodeid for nodeid in RUNS_WITH_FILE
             if nodeid.split("::", 1)[0] in files and nodeid not in collected]
    if stale:
        raise pytest.UsageError(f"conftest.RUNS_WITH_FILE names tests that do not exist: {stale}")

    def rank(item) -> int:
        name = Path(_unit_of_work(item.nodeid)).name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST \
            else len(LONGEST_FILES_FIRST)

    items.sort(key=rank)  # stable: file order, then test order, within a rank


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs the suite in one process
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        """--dist loadfile, with RUNS_WITH_FILE's tests in their training runs' unit."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit_of_work(nodeid)

    return FileScheduling(config, log)


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


# --- trained and exported tiny models, built once per session (per xdist worker) -------------
# (tests/helpers.py builds and caches them; these fixtures are how tests ask for them)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory):
    """The scratch CNN fitted to synthetic voices: it tells the genders apart."""
    return helpers.trained_classifier(tmp_path_factory)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    """`trained_classifier` exported: the model folder, holding version 1."""
    return helpers.exported_model(tmp_path_factory)


@pytest.fixture(scope="session")
def untrained_exported_model(tmp_path_factory) -> Path:
    """A seeded, untrained scratch CNN exported: a second, different model folder."""
    return helpers.untrained_exported_model(tmp_path_factory)


@pytest.fixture(scope="session")
def holdout_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """`train` run once: deterministic hold-out, 2 epochs (output, logs, metrics.json)."""
    return helpers.holdout_run(tmp_path_factory)


@pytest.fixture(scope="session")
def folds_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """`train` run once: 2-fold cross-validation with a corrupt file in the corpus."""
    return helpers.folds_run(tmp_path_factory)


@pytest.fixture
def server():
    """A file server on 127.0.0.1 for download tests (`local_http.FileServer`)."""
    from local_http import FileServer

    with FileServer() as running:
        yield running
