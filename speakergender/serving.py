"""Using exported SavedModels with nothing but TensorFlow: find, load, feed WAV files.

This is the client side of `export.py`, shared by `evaluate` and `predict`. It does not import
the model code: any SavedModel with the `classify_wav` signature works, wherever it was made.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from speakergender import streaming
from speakergender.model_dirs import latest_version_dir

DEFAULT_MODELS_DIR = Path("saved_models")
WAV_SUFFIXES = (".wav", ".wave")
# Read through soundfile, where it is installed, and handed to the model as float WAV bytes.
OTHER_AUDIO_SUFFIXES = (".flac", ".ogg", ".oga", ".aiff", ".aif")
# Blocks of a long recording per model call. With `streaming.BLOCK_SECONDS` it bounds a call's
# decoding, resampling and framing buffers, which come on top of the ~0.9 GB that TensorFlow
# and a loaded model take before any audio.
BLOCKS_PER_CALL = 1
# Files scored whole go to the model in batches of at most this many bytes (and `batch_size`
# files): 32 one-minute 48 kHz files in one call would take 2 GB more.
MAX_BATCH_BYTES = 16 << 20


@dataclasses.dataclass
class LoadedModel:
    """A SavedModel and what it says about itself."""

    name: str
    path: Path
    module: object
    config: dict
    sample_rate: int
    clip_samples: int
    # Markdown; empty for models exported before model cards existed.
    model_card: str = ""

    @property
    def classify_wav(self):
        return self.module.signatures["classify_wav"]

    @property
    def window_hop_seconds(self) -> float:
        """Seconds between the starts of consecutive windows (0.48 for models that do not say)."""
        return self.config.get("front_end", {}).get("window_hop_seconds", 0.48)

    @property
    def window_hop_samples(self) -> int:
        return int(round(self.window_hop_seconds * self.sample_rate))

    @property
    def parameter_count(self) -> int:
        """Weights the model computes with (calibration scalars and optimizer state aside)."""
        # A loaded SavedModel is a plain trackable without `.variables`; its signatures list
        # the variables they capture.
        return int(sum(np.prod(v.shape) for v in self.classify_wav.variables
                       if v.name.split(":")[0] not in ("temperature", "calibration_bias",
                                                           "threshold")))


def resolve_model_path(model: str | Path, models_dir: Path = DEFAULT_MODELS_DIR) -> Path:
    """A SavedModel folder from a path (model folder or version folder) or a run name.

    Raises:
      FileNotFoundError: naming what was looked for.
    """
    candidates = [Path(model), models_dir / str(model)]
    for candidate in candidates:
        if candidate.is_dir():
            return latest_version_dir(candidate)
    raise FileNotFoundError(f"no model at {model!r} (looked in {', '.join(map(str, candidates))})")


def load_model(model: str | Path, models_dir: Path = DEFAULT_MODELS_DIR) -> LoadedModel:
    """Loads a speakergender SavedModel.

    Raises:
      FileNotFoundError: nothing there.
      ValueError: a SavedModel without the `classify_wav` signature.
    """
    path = resolve_model_path(model, models_dir)
    module = tf.saved_model.load(str(path))
    if "classify_wav" not in module.signatures:
        raise ValueError(f"{path}: this SavedModel has no classify_wav signature; it was not "
                         "exported by speakergender")
    metadata = module.signatures["metadata"]()
    name = path.parent.name if path.name.isdigit() else path.name
    return LoadedModel(
        name=name, path=path, module=module,
        config=json.loads(metadata["config_json"].numpy().decode() or "{}"),
        sample_rate=int(metadata["sample_rate"].numpy()),
        clip_samples=int(metadata["clip_samples"].numpy()),
        model_card=metadata["model_card"].numpy().decode() if "model_card" in metadata else "")


def list_models(models_dir: Path = DEFAULT_MODELS_DIR) -> list[Path]:
    """Model folders under `models_dir` that hold at least one complete version."""
    return sorted(p for p in models_dir.glob("*")
                  if p.is_dir() and any((v / "saved_model.pb").is_file() for v in p.glob("[0-9]*")))


def audio_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expands files and folders (recursively) into audio files.

    Returns:
      (files in a stable order, [(path, reason)] for arguments that do not exist).
    """
    files, missing = [], []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(p for p in entry.rglob("*") if p.is_file()
                                and p.suffix.lower() in WAV_SUFFIXES + OTHER_AUDIO_SUFFIXES
                                and not p.name.startswith(".")))
        elif entry.is_file():
            files.append(entry)
        else:
            missing.append((str(entry), "no such file or folder"))
    return files, missing


def read_as_wav_bytes(path: Path) -> bytes:
    """The file's bytes; formats other than WAV are converted to float WAV via soundfile.

    Raises:
      OSError: the file cannot be read.
      ValueError: not WAV and soundfile is missing or cannot read it.
    """
    data = path.read_bytes()
    if path.suffix.lower() not in OTHER_AUDIO_SUFFIXES or data[:4] == b"RIFF":
        return data
    try:
        import soundfile
    except ImportError as error:
        raise ValueError(f"{path.suffix} files need the soundfile package "
                         "(pip install soundfile)") from error
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own error types
        # libsndfile's own words; str(error) would name the in-memory buffer's address.
        reason = getattr(error, "error_string", None) or error
        raise ValueError(f"soundfile cannot read it: {reason}") from error
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@dataclasses.dataclass
class FileResult:
    path: str
    error: str = ""
    label: str = ""
    female_probability: float = float("nan")
    duration_seconds: float = float("nan")
    window_probabilities: list[float] = dataclasses.field(default_factory=list)
    window_sounding: list[bool] = dataclasses.field(default_factory=list)
    window_level_db: list[float] = dataclasses.field(default_factory=list)
    # None for models exported before the model said so itself.
    windows_disagree: bool | None = None


def classify_files(model: LoadedModel, files: Sequence[Path], batch_size: int = 32,
                   timings: list[float] | None = None) -> Iterator[FileResult]:
    """Classifies files in batches through the model's `classify_wav` signature.

    Files are read here and decoded, resampled and scored inside the model's graph, a batch
    per call; a file that cannot be read or decoded yields a result with `error` set and never
    stops the others. Long WAV recordings are scored a block at a time (`streaming`), in
    bounded memory, with the result of scoring them whole.

    Args:
      model: a loaded SavedModel.
      files: audio files.
      batch_size: files per call.
      timings: if given, the seconds spent in each model call are appended to it.

    Yields:
      One FileResult per file, in order.
    """
    whole, whole_bytes = [], 0
    for path in files:
        blocks = plan_blocks(model, path)
        size = _size(path)
        if whole and (blocks or len(whole) == batch_size
                      or whole_bytes + size > MAX_BATCH_BYTES):
            yield from _classify_whole(model, whole, timings)
            whole, whole_bytes = [], 0
        if blocks:
            yield _classify_blocks(model, blocks, timings)
        else:
            whole.append(path)
            whole_bytes += size
    yield from _classify_whole(model, whole, timings)


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # reading it reports the error


def plan_blocks(model: LoadedModel, path: str | Path) -> list[streaming.Block]:
    """The blocks a long recording is scored in; [] for files scored whole (and for every file
    with models exported before windows could be scored in blocks)."""
    if "summarize_windows" not in model.module.signatures:
        return []
    return streaming.plan_blocks(path, model.sample_rate, model.clip_samples,
                                 model.window_hop_samples, streaming.BLOCK_SECONDS)


def _run(model: LoadedModel, contents: list[bytes], timings: list[float] | None) -> dict:
    began = time.perf_counter()
    outputs = model.classify_wav(wav_bytes=tf.constant(contents))
    if timings is not None:
        timings.append(time.perf_counter() - began)
    return {key: value.numpy() for key, value in outputs.items()}


def read_each(readers: Iterable[Callable[[], bytes]]) -> tuple[list[bytes], dict[int, str]]:
    """Calls each reader: the bytes read (empty where reading failed) and {index: reason} for
    those that failed (OSError or ValueError), so one unreadable file costs only its row."""
    contents, errors = [], {}
    for index, read in enumerate(readers):
        try:
            contents.append(read())
        except (OSError, ValueError) as error:
            errors[index] = str(getattr(error, "strerror", None) or error)
            contents.append(b"")
    return contents, errors


def _classify_whole(model: LoadedModel, files: Sequence[Path],
                    timings: list[float] | None) -> Iterator[FileResult]:
    if not files:
        return
    contents, read_errors = read_each(functools.partial(read_as_wav_bytes, path)
                                      for path in files)
    outputs = _run(model, contents, timings)
    for index, path in enumerate(files):
        yield file_result(str(path), outputs, index, read_errors.get(index, ""))


def _classify_blocks(model: LoadedModel, blocks: list[streaming.Block],
                     timings: list[float] | None) -> FileResult:
    scored = []
    for start in range(0, len(blocks), BLOCKS_PER_CALL):
        chunk = blocks[start:start + BLOCKS_PER_CALL]
        try:
            contents = [block.read() for block in chunk]
        except OSError as error:
            return FileResult(chunk[0].path, error=str(error.strerror or error))
        outputs = _run(model, contents, timings)
        scored.extend((block, {key: value[index] for key, value in outputs.items()})
                      for index, block in enumerate(chunk))
    return combine_blocks(model, scored)


def combine_blocks(model: LoadedModel, scored: list[tuple[streaming.Block, dict]]) -> FileResult:
    """One recording's result from its blocks' `classify_wav` outputs (one row each, numpy),
    equal to what scoring the recording whole gives."""
    recording = scored[0][0]  # any block: path and length are the recording's
    error, windows = streaming.join_windows(scored)
    if error:
        return FileResult(recording.path, error=error)
    outputs = model.module.signatures["summarize_windows"](
        **{key: tf.constant(value) for key, value in windows.items()})
    outputs = {key: value.numpy() for key, value in outputs.items()}
    outputs["error"] = np.array([b""])
    outputs["duration_seconds"] = np.array(
        [np.float32(recording.recording_samples) / np.float32(model.sample_rate)])
    return file_result(recording.path, outputs, 0)


def file_result(path: str, outputs: dict, index: int, read_error: str = "") -> FileResult:
    """Row `index` of `classify_wav`'s outputs (numpy) as a FileResult."""
    error = read_error or outputs["error"][index].decode()
    if error:
        return FileResult(path, error=error)
    windows = int(outputs["window_count"][index])
    window_probabilities = 1.0 / (1.0 + np.exp(-outputs["window_logits"][index, :windows]))
    return FileResult(
        path, label=outputs["label"][index].decode(),
        female_probability=float(outputs["female_probability"][index]),
        duration_seconds=float(outputs["duration_seconds"][index]),
        window_probabilities=window_probabilities.tolist(),
        window_sounding=outputs["window_sounding"][index, :windows].tolist(),
        # Absent from models exported before it was added.
        window_level_db=outputs["window_level_db"][index, :windows].tolist()
        if "window_level_db" in outputs else [],
        windows_disagree=bool(outputs["windows_disagree"][index])
        if "windows_disagree" in outputs else None)
