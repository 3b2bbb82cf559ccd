"""Batch scoring on Apache Beam: audio files matching a pattern in, one row per file out.

The pipeline: find files (through Beam's file systems) -> cut long WAV recordings into blocks
(`streaming`), so that one long file does not become one worker's whole job -> score files and
blocks in batches with RunInference -> join the blocks of each recording again -> one row per
recording, as `predict --json` prints it, written as JSON lines or CSV. A recording that cannot
be read or decoded becomes a row with its error; it never fails the pipeline.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.utils import shared

from speakergender import result_rows, serving, streaming
from speakergender.beam_model_handler import ClassifyWavModelHandler

METRICS_NAMESPACE = "speakergender"
OUTPUT_SUFFIXES = {"json": ".jsonl", "csv": ".csv"}


@dataclasses.dataclass(frozen=True)
class ScoringJob:
    """What to score, with which model, and where the rows go."""

    # A SavedModel version folder every worker can read.
    model_path: str
    # A file pattern for Beam's file systems: /data/**/*.wav, gs://bucket/audio/*, ...
    input_pattern: str
    # Output files are PREFIX-00000-of-00004.jsonl and so on.
    output_prefix: str
    output_format: str = "json"
    batch_size: int = 32
    # Female from this probability on; None keeps the model's own label.
    threshold: float | None = None
    # Given, rows carry a per-window timeline (JSON only).
    window_hop_seconds: float | None = None


def add_scoring(pipeline: beam.Pipeline, job: ScoringJob, grid: BlockGrid) -> beam.PCollection:
    """Adds the scoring steps to a pipeline.

    Args:
      pipeline: where to add them.
      job: what to score and where the rows go.
      grid: the model's window grid, to cut long recordings into blocks.

    Returns:
      The rows (dicts, as `result_rows.result_row` makes them), one per audio file; they are
      also written to `job.output_prefix`.
    """
    handler = ClassifyWavModelHandler(
        job.model_path, job.batch_size, element_weight=functools.partial(
            # The bytes of audio `predict` gives one model call, at most.
            batch_slots, slot_bytes=serving.MAX_BATCH_BYTES // job.batch_size))
    rows = (pipeline
            | "Find files" >> fileio.MatchFiles(job.input_pattern)
            | "Skip other files" >> beam.Filter(lambda metadata: is_audio_file(metadata.path))
            | "Spread files" >> beam.Reshuffle()
            | "Split into blocks" >> beam.FlatMap(split_recording, grid)
            | "Spread blocks" >> beam.Reshuffle()
            | "Score blocks" >> RunInference(KeyedModelHandler(handler))
            | "Keep block scores" >> beam.MapTuple(
                lambda path, prediction: (path, (prediction.example, prediction.inference)))
            | "Group blocks by file" >> beam.GroupByKey()
            | "Combine blocks" >> beam.ParDo(CombineBlocks(job.model_path))
            | "Make rows" >> beam.Map(result_rows.result_row, job.threshold,
                                      job.window_hop_seconds))
    write_rows(rows, job.output_prefix, job.output_format)
    return rows


def is_audio_file(path: str) -> bool:
    """Whether `predict` would pick the file up from a folder: a known suffix, not hidden."""
    name = FileSystems.split(path)[1]
    return (not name.startswith(".")
            and Path(name).suffix.lower() in serving.WAV_SUFFIXES + serving.OTHER_AUDIO_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """What cutting a recording into blocks needs to know of the model, so that the workers
    that plan blocks need not load it."""

    sample_rate: int
    clip_samples: int
    window_hop_samples: int
    # Models exported before `summarize_windows` existed score every recording whole.
    scores_blocks: bool

    @classmethod
    def of(cls, model: serving.LoadedModel) -> BlockGrid:
        return cls(model.sample_rate, model.clip_samples, model.window_hop_samples,
                   "summarize_windows" in model.module.signatures)


@dataclasses.dataclass(frozen=True)
class WholeRecording:
    """A recording scored in one piece: short, not WAV, or not on the local file system."""

    path: str
    source_bytes: int

    def read(self) -> bytes:
        return read_as_wav_bytes(self.path)


def split_recording(metadata: FileMetadata, grid: BlockGrid) -> list[tuple[str, object]]:
    """(path, piece) pairs for one file: the blocks of a long WAV recording, else the whole
    recording. Pieces read themselves as WAV bytes (`.read()`)."""
    blocks = (streaming.plan_blocks(metadata.path, grid.sample_rate, grid.clip_samples,
                                    grid.window_hop_samples, streaming.BLOCK_SECONDS)
              if grid.scores_blocks else [])
    return ([(metadata.path, block) for block in blocks]
            or [(metadata.path, WholeRecording(metadata.path, metadata.size_in_bytes))])


class CombineBlocks(beam.DoFn):
    """(path, [(piece, outputs row)]) -> the recording's FileResult.

    Joining the blocks of a long recording calls the model's `summarize_windows`; the model is
    loaded for that the first time a worker process needs it, once per process.
    """

    def __init__(self, model_path: str):
        self._model_path = model_path
        self._shared_model = shared.Shared()

    def process(self, element):
        path, scored = element
        scored = list(scored)
        counter = beam.metrics.Metrics.counter
        if len(scored) == 1 and isinstance(scored[0][0], WholeRecording):
            result = serving.file_result(path, _batch_of_one(scored[0][1]), 0)
        else:
            model = self._shared_model.acquire(lambda: serving.load_model(self._model_path))
            result = serving.combine_blocks(model, scored)
        counter(METRICS_NAMESPACE, "files_failed" if result.error else "files_scored").inc()
        yield result


def batch_slots(keyed_piece: tuple[str, object], slot_bytes: int) -> int:
    """How many of a batch's `batch_size` places a (path, piece) pair takes: one for each
    `slot_bytes` of audio it reads (what a model call's memory grows with), at least one."""
    piece = keyed_piece[1]
    if isinstance(piece, streaming.Block):
        source_bytes = piece.frames * piece.layout.frame_bytes
    else:
        source_bytes = piece.source_bytes
    return max(1, math.ceil(source_bytes / slot_bytes))


def _batch_of_one(row: dict) -> dict:
    """One row of `classify_wav` outputs as the outputs of a batch of one."""
    return {key: np.expand_dims(value, 0) for key, value in row.items()}


def read_as_wav_bytes(path: str) -> bytes:
    """The file as WAV bytes, from any of Beam's file systems; as `serving.read_as_wav_bytes`.

    Raises:
      OSError: the file cannot be read.
      ValueError: not WAV and soundfile cannot convert it.
    """
    if FileSystems.get_scheme(path) is None:
        return serving.read_as_wav_bytes(Path(path))
    # serving converts FLAC and the like from a local file: copy remote ones here first.
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as remote:
        data = remote.read()
    if Path(path).suffix.lower() not in serving.OTHER_AUDIO_SUFFIXES:
        return data
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / FileSystems.split(path)[1]
        local.write_bytes(data)
        return serving.read_as_wav_bytes(local)


def write_rows(rows: beam.PCollection, output_prefix: str, output_format: str) -> None:
    """Writes rows as JSON lines or CSV (a header in each shard) under `output_prefix`."""
    if output_format == "json":
        lines = rows | "To JSON" >> beam.Map(json.dumps)
        header = None
    else:
        lines = rows | "To CSV" >> beam.Map(csv_line)
        header = ",".join(result_rows.COLUMNS)
    lines | "Write" >> beam.io.WriteToText(
        output_prefix, file_name_suffix=OUTPUT_SUFFIXES[output_format], header=header)


def csv_line(row: dict) -> str:
    """One CSV line (no line end) of a row, as `predict --csv` writes it."""
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=result_rows.COLUMNS, extrasaction="ignore",
                   lineterminator="").writerow(row)
    return line.getvalue()


def counter_total(result: beam.runners.runner.PipelineResult, name: str) -> int:
    """A finished pipeline's count of files_scored or files_failed."""
    query = MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
    counters = result.metrics().query(query)["counters"]
    # Runners that do not commit metrics leave `committed` None.
    return sum(c.committed if c.committed is not None else c.attempted for c in counters)
