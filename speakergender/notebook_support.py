"""What the notebooks in `notebooks/` share: where things are, which corpus, a small subset of it,
training runs they can reuse, and figures saved as PNG and shown inline.

Nothing here computes features or scores: the notebooks call the product's own modules for that.

Environment variables (all optional):
  SPEAKERGENDER_NOTEBOOK_FULL=1   bigger settings (more clips per speaker, more epochs).
  SPEAKERGENDER_FIGURES_DIR       where PNGs go (default: notebooks/figures, git-ignored).
  SPEAKERGENDER_NOTEBOOK_RUNS     where training runs go (default: saved_models/notebooks).
  SPEAKERGENDER_SHARED_DIR        the shared folder (default: ../shared beside the checkout); an
                                  empty folder shows what the notebooks do without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
FULL_ENV = "SPEAKERGENDER_NOTEBOOK_FULL"
FIGURES_ENV = "SPEAKERGENDER_FIGURES_DIR"
RUNS_ENV = "SPEAKERGENDER_NOTEBOOK_RUNS"
SHARED_ENV = "SPEAKERGENDER_SHARED_DIR"

# The synthetic stand-in when ../shared is absent: as unbalanced as AudioMNIST (more men).
SYNTHETIC_CORPUS = dict(female_speakers=6, male_speakers=10, clips_per_speaker=10,
                        seconds=1.2, seed=0)


def full_mode() -> bool:
    """Whether SPEAKERGENDER_NOTEBOOK_FULL=1 asks for the bigger settings."""
    return os.environ.get(FULL_ENV, "") == "1"


def shared_dir() -> Path:
    """The shared folder beside the checkout (it may not exist)."""
    return Path(os.environ.get(SHARED_ENV) or REPO_ROOT.parent / "shared")


def shared_corpus() -> Path | None:
    """The shared AudioMNIST_AZ recordings, or None where absent."""
    folder = shared_dir() / "data" / "audiomnist-az-dev"
    return folder if (folder / "data").is_dir() else None


def yamnet_tflite() -> Path | None:
    """The shared YAMNet TFLite weights, or None where absent."""
    path = shared_dir() / "models" / "yamnet" / "yamnet.tflite"
    return path if path.is_file() else None


def figures_dir() -> Path:
    """The folder figures are saved in (created)."""
    folder = Path(os.environ.get(FIGURES_ENV) or REPO_ROOT / "notebooks" / "figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def runs_dir() -> Path:
    """The folder training runs go to (created); git-ignored under saved_models/."""
    folder = Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "saved_models" / "notebooks")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclasses.dataclass(frozen=True)
class CorpusChoice:
    """The corpus a notebook runs on, and a sentence saying which and why."""

    path: Path
    kind: str  # "given", "shared" or "synthetic"
    note: str


def find_corpus(requested: str | Path | None = None) -> CorpusChoice:
    """The corpus to use: the one asked for, else ../shared's recordings, else a synthetic one.

    Args:
      requested: a corpus folder or manifest; None to choose automatically.

    Returns:
      A CorpusChoice; a synthetic corpus is written once into the temp folder and reused.
    """
    if requested is not None:
        return CorpusChoice(Path(requested), "given", f"Using the corpus at {requested}.")
    shared = shared_corpus()
    if shared is not None:
        return CorpusChoice(shared, "shared",
                            f"Using the shared recordings at {shared} (AudioMNIST_AZ).")
    return CorpusChoice(synthetic_corpus(), "synthetic",
                        "../shared is absent here: using a synthetic corpus "
                        "(speakergender.synthetic), whose voices differ by gender in pitch and "
                        "formants by construction. Its figures show how the tools work, not "
                        "facts about real voices.")


def synthetic_corpus(root: str | Path | None = None) -> Path:
    """Writes `SYNTHETIC_CORPUS` once (atomically) and returns its folder."""
    from speakergender import synthetic

    tag = "-".join(f"{value}" for value in SYNTHETIC_CORPUS.values())
    root = Path(root or Path(tempfile.gettempdir()) / f"speakergender-notebook-corpus-{tag}")
    if (root / "data").is_dir():
        return root
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    synthetic.write_corpus(staging, **SYNTHETIC_CORPUS)
    try:
        staging.rename(root)
    except OSError:  # written meanwhile by another process
        shutil.rmtree(staging, ignore_errors=True)
    return root


def subset(table: pd.DataFrame, max_clips_per_speaker: int | None, seed: int = 0
           ) -> pd.DataFrame:
    """At most `max_clips_per_speaker` clips of every speaker, drawn at random (fixed by seed).

    Args:
      table: a clip table (`corpora.load_corpus(...).table`).
      max_clips_per_speaker: None keeps every clip.
      seed: fixes which clips are drawn.

    Returns:
      The chosen rows, sorted by path, with a fresh index.
    """
    if max_clips_per_speaker is None:
        return table.reset_index(drop=True)
    shuffled = table.sample(frac=1.0, random_state=seed)
    chosen = shuffled.groupby("speaker", sort=False).head(max_clips_per_speaker)
    return chosen.sort_values("path").reset_index(drop=True)


def show(figure, name: str):
    """Saves `figure` as figures_dir()/NAME.png, closes it, and returns the PNG for display.

    The notebook shows the saved file itself, so what is seen is what was written.
    """
    from IPython.display import Image

    from speakergender import plots

    path = plots.save(figure, figures_dir() / f"{name}.png")
    return Image(filename=str(path))


def show_png(path: str | Path):
    """An existing PNG, for display."""
    from IPython.display import Image

    return Image(filename=str(path))


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The clips notebooks 03 and 04 train and evaluate on, and how they were chosen."""

    choice: CorpusChoice
    corpus: object  # corpora.Corpus
    table: pd.DataFrame
    description: dict  # stored in each run's config.json; runs on other data are not reused


def training_data(corpus_dir: str | Path | None, max_clips_per_speaker: int | None,
                  seed: int = 0) -> TrainingData:
    """The corpus (see `find_corpus`) cut to at most `max_clips_per_speaker` clips a speaker."""
    from speakergender import corpora

    choice = find_corpus(corpus_dir)
    corpus = corpora.load_corpus(choice.path)
    table = subset(corpus.table, max_clips_per_speaker, seed=seed)
    description = {"source": str(choice.path), "format": corpus.format,
                   "max_clips_per_speaker": max_clips_per_speaker, "seed": seed,
                   "speakers": int(table["speaker"].nunique()), "clips": len(table)}
    return TrainingData(choice, corpus, table, description)


def run_specs(epochs: int, batch_size: int, yamnet_tflite: Path | None, seed: int = 0) -> dict:
    """The runs notebooks 03 and 04 share: name -> (FrontEndParams, TrainParams).

    The scratch CNN on log-mel and on MFCCs, and YAMNet (frozen, a head on its embeddings)
    where its TFLite weights are given. Speaker-disjoint hold-out split; the same seed gives
    every run the same held-out speakers.
    """
    from speakergender.config import FrontEndParams, TrainParams

    common = dict(epochs=epochs, batch_size=batch_size, seed=seed, folds=0, test_fraction=0.25,
                  validation_fraction=0.2, early_stopping_patience=max(3, epochs))
    specs = {
        "scratch-log-mel": (FrontEndParams(), TrainParams(model="scratch", **common)),
        "scratch-mfcc": (FrontEndParams.seed_mfcc(), TrainParams(model="scratch", **common)),
    }
    if yamnet_tflite is not None:
        specs["yamnet-frozen"] = (FrontEndParams(), TrainParams(
            model="yamnet-frozen", backbone_handle=str(yamnet_tflite), **common))
    return specs


def ensure_run(name: str, table: pd.DataFrame, front_end, params, data_description: dict,
               verbose: int = 2) -> tuple[Path, dict]:
    """A finished training run of this configuration: reused when present, else trained.

    Args:
      name: the run's folder name under runs_dir().
      table: the clips to split and train on.
      front_end, params: the run's configuration.
      data_description: stored in config.json; a run made on other data is not reused.
      verbose: Keras progress output.

    Returns:
      (run folder, its metrics.json contents).
    """
    from speakergender import experiment
    from speakergender.models import registry

    output = runs_dir() / name
    expected = experiment.run_config(
        registry.required_front_end(params.model, front_end), params,
        {**data_description, "leaky_split": False})
    finished = all((output / f).exists() for f in ("metrics.json", "model.keras", "config.json"))
    if finished and json.loads((output / "config.json").read_text()) == json.loads(
            json.dumps(expected)):
        print(f"{name}: reusing the finished run in {output}", flush=True)
        return output, json.loads((output / "metrics.json").read_text())
    result = experiment.run_experiment(
        table, front_end, params, experiment.RunPaths(output=output, logs=None),
        data_description, resume=False, verbose=verbose)
    return output, result


def heldout_speakers(result: dict) -> list[str]:
    """The speakers a hold-out run never trained on (from its metrics)."""
    speakers = sorted({s for fold in result["folds"] for s in fold["test_speakers"]})
    if not speakers:
        raise ValueError("this run records no held-out speakers")
    return speakers

