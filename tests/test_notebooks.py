"""The notebooks run top to bottom, save their figures, and are committed without outputs.

Each notebook is executed from a copy (the repository's file is never written), in a kernel
started with this interpreter, with `notebooks/` as the working directory (as Jupyter starts
it), so they find ../shared the way they do for a user. Figures go to a temporary folder per
notebook; training runs go to one temporary folder shared by the session, so notebook 04 reuses
the models notebook 03 trained, as it does for a user.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 600
KERNEL_NAME = "speakergender-notebook-test"

pytestmark = pytest.mark.filterwarnings(
    # jupyter_client / jupyter_core / zmq announce deprecations of their own internals.
    "ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


def test_notebooks_exist():
    names = [path.name for path in NOTEBOOKS]
    assert names == ["01_eda.ipynb", "02_features.ipynb", "03_train_and_compare.ipynb",
                     "04_interpret.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs or execution counts; " \
                      f"clear them before committing"
    parameters = [cell for cell in notebook.cells
                  if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: expected one cell tagged 'parameters'"


@pytest.fixture(scope="session")
def kernel_dirs(tmp_path_factory) -> list[str]:
    """A kernelspec that starts this interpreter, whatever `python` on PATH is."""
    folder = tmp_path_factory.mktemp("kernels")
    spec_dir = folder / KERNEL_NAME
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "speakergender tests", "language": "python"}))
    return [str(folder)]


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-runs")


def execute_notebook(path: Path, kernel_dirs: list[str], env_overrides: dict[str, str]
                     ) -> tuple[nbformat.NotebookNode, float]:
    """Runs a copy of the notebook; raises nbclient's CellExecutionError naming the cell."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SPEAKERGENDER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", JUPYTER_PLATFORM_DIRS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH")])),
               **env_overrides)
    manager = KernelManager(kernel_name=KERNEL_NAME,
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_SECONDS,
                            kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    started = time.perf_counter()
    try:
        client.execute(env=env)
    finally:
        # The client only shuts down kernels it made itself; this one was handed to it.
        if client.kc is not None:
            client.kc.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return notebook, time.perf_counter() - started


def _errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"{output.get('ename')}: {output.get('evalue')}" for cell in notebook.cells
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_saves_figures(path: Path, kernel_dirs, runs_dir, tmp_path):
    figures = tmp_path / "figures"
    committed = path.read_bytes()
    trained_by_03 = sorted(p.parent.name for p in runs_dir.glob("*/metrics.json"))
    notebook, seconds = execute_notebook(path, kernel_dirs, {
        "SPEAKERGENDER_FIGURES_DIR": str(figures),
        "SPEAKERGENDER_NOTEBOOK_RUNS": str(runs_dir)})
    print(f"{path.name}: {seconds:.0f} s")
    assert not _errors(notebook)
    if path.stem.startswith("04") and trained_by_03:
        # Notebook 04 explains the models notebook 03 trained: same settings, no retraining.
        text = "".join(output.get("text", "") for cell in notebook.cells
                       for output in cell.get("outputs", []))
        assert "reusing the finished run" in text and "Epoch 1/" not in text, \
            "notebook 04 retrained instead of reusing notebook 03's runs"
    saved = sorted(p.name for p in figures.glob("*.png"))
    assert saved, f"{path.name} saved no PNG"
    number = path.name.split("_")[0]
    assert all(name.startswith(f"{number}_") for name in saved), saved
    assert all((figures / name).stat().st_size > 1000 for name in saved)
    assert path.read_bytes() == committed, "executing must not write into the repository's copy"


@pytest.mark.slow
def test_notebooks_run_without_shared_folder(kernel_dirs, tmp_path):
    """Without ../shared: a synthetic corpus, and the YAMNet parts say they are skipped."""
    empty_shared = tmp_path / "no-shared"
    empty_shared.mkdir()
    runs = tmp_path / "runs"
    for path in NOTEBOOKS:
        figures = tmp_path / "figures" / path.stem
        notebook, _ = execute_notebook(path, kernel_dirs, {
            "SPEAKERGENDER_SHARED_DIR": str(empty_shared),
            "SPEAKERGENDER_FIGURES_DIR": str(figures),
            "SPEAKERGENDER_NOTEBOOK_RUNS": str(runs)})
        assert not _errors(notebook)
        assert list(figures.glob("*.png")), f"{path.name} saved no PNG"
        text = "".join(output.get("text", "") for cell in notebook.cells
                       for output in cell.get("outputs", []))
        assert "synthetic" in text, f"{path.name} does not say it used the synthetic corpus"
        if path.stem.startswith(("03", "04")):
            assert "skipped" in text.lower(), f"{path.name} does not say YAMNet was skipped"
