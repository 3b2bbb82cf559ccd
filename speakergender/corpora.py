"""Turn a folder of recordings into a table: one row per clip, labeled with speaker and gender.

Three sources are understood, and `load_corpus` tells them apart:

- `audiomnist-json`: AudioMNIST as published, `<root>/data/NN/D_NN_R.wav` (or `<root>/NN/...`)
  with `audioMNIST_meta.txt`, JSON keyed by speaker id.
- `audiomnist-csv`: the same layout with `metadata.txt`, a CSV `SPK ID,0,...,9,Gender`.
- `manifest`: a user's CSV with `path,speaker,gender` columns (extra columns are kept).

Every row carries the name of the corpus it came from (`corpus`); `load_corpora` reads several
sources into one table, with speaker ids namespaced by corpus so two corpora's "01" stay two
speakers.

Nothing is decoded here; files that cannot be used are listed in `Corpus.problems` and logged,
never dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NamedTuple

import pandas as pd

logger = logging.getLogger(__name__)

GENDERS = ("female", "male")
CORE_COLUMNS = ("path", "speaker", "gender", "digit", "repetition", "corpus")
# Joins a corpus name and a speaker id when several corpora are read together.
SPEAKER_NAMESPACE_SEPARATOR = ":"
LAYOUT_AUDIO_SUFFIXES = (".wav",)
MANIFEST_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
JSON_METADATA_NAME = "audioMNIST_meta.txt"
CSV_METADATA_NAME = "metadata.txt"
MANIFEST_NAME = "manifest.csv"

# AudioMNIST file names: <digit>_<speaker>_<repetition>.wav
_AUDIOMNIST_NAME = re.compile(r"^(\d)_(\d+)_(\d+)$")
_GENDER_WORDS = {"m": "male", "male": "male", "f": "female", "female": "female"}
# Published AudioMNIST metadata has placeholder ages (e.g. "1234"); they must not reach an EDA.
_PLAUSIBLE_AGE = range(1, 120)


class CorpusError(ValueError):
    """A source that does not exist, or whose format cannot be detected or read."""


class CorpusProblem(NamedTuple):
    """A file left out of the corpus, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Recordings found under one source.

    Attributes:
      table: one row per clip, sorted by path; columns `path` (absolute str), `speaker` (str),
        `gender` ("female"/"male"), `digit` and `repetition` (Int64, <NA> where unknown),
        `corpus` (the corpus name), then any metadata columns the source carries (e.g. `age`
        as Int64, `accent`).
      problems: files that were skipped, with the reason.
      format: "audiomnist-json", "audiomnist-csv" or "manifest"; formats joined by "+" for
        several corpora.
      source: the folder or file that was read (the first one, for several corpora).
      parts: for several corpora, each one as read on its own.
    """

    table: pd.DataFrame
    problems: tuple[CorpusProblem, ...]
    format: str
    source: Path
    parts: tuple["Corpus", ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The corpus names, in the order the sources were given."""
        return tuple(dict.fromkeys(self.table["corpus"]))


@dataclasses.dataclass(frozen=True)
class _SpeakerMeta:
    """One speaker's metadata entry; `gender` is None when unusable, with `reason` saying why."""

    gender: str | None
    reason: str = ""
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Clips per digit as the metadata lists them (CSV metadata only); informational.
    digit_counts: dict[int, int] = dataclasses.field(default_factory=dict)


def load_corpus(source: str | Path, name: str | None = None) -> Corpus:
    """Detects the source's format and lists its recordings.

    Args:
      source: an AudioMNIST-layout folder (holding `audioMNIST_meta.txt` or `metadata.txt`, at
        its top or in its `data/`), a manifest CSV, or a folder holding `manifest.csv`.
      name: the corpus name in the `corpus` column; default `corpus_name(source)`.

    Returns:
      A `Corpus`; skipped files are in `.problems` and are also logged as warnings.

    Raises:
      CorpusError: the source does not exist, its format cannot be detected, its metadata
        cannot be read, or no usable recording is left.
    """
    source = Path(os.path.abspath(os.fspath(source)))
    if not source.exists():
        raise CorpusError(f"corpus source {source} does not exist; expected a corpus folder "
                          f"or a manifest CSV")
    if source.is_file():
        if source.name in (JSON_METADATA_NAME, CSV_METADATA_NAME):
            return load_corpus(source.parent, name)
        if source.suffix.lower() != ".csv":
            raise CorpusError(f"{source} is a file but not a manifest CSV; expected a .csv with "
                              f"path,speaker,gender columns, or a corpus folder")
        (table, problems), fmt = _read_manifest(source), "manifest"
    else:
        table, problems, fmt = _read_folder(source)
    _log_problems(problems)
    if table.empty:
        raise CorpusError(f"no usable recordings in {source} ({len(problems)} files skipped: "
                          f"{_examples(problems)})")
    table["corpus"] = name or corpus_name(source)
    return Corpus(table=table, problems=tuple(problems), format=fmt, source=source)


def corpus_name(source: str | Path) -> str:
    """A corpus's name from where it lives: the folder's name, or a manifest's ("manifest.csv"
    names its folder; "english.csv" is "english"). A `data/` folder names its parent."""
    path = Path(os.path.abspath(os.fspath(source)))
    if path.is_file():
        path = path.parent if path.name in (MANIFEST_NAME, JSON_METADATA_NAME,
                                            CSV_METADATA_NAME) else path.with_suffix("")
    if path.name == "data":
        path = path.parent
    return path.name


def parse_source(text: str) -> tuple[str | None, str]:
    """"NAME=PATH" -> (NAME, PATH); a plain path -> (None, PATH)."""
    name, separator, path = str(text).partition("=")
    if separator and name and not os.path.exists(text) and "/" not in name:
        return name.strip(), path
    return None, str(text)


def load_corpora(sources: Sequence[str | Path]) -> Corpus:
    """Reads several sources into one table, each row tagged with its corpus.

    With more than one source, speaker ids become `corpus:speaker`, so two corpora's speaker
    "01" are two speakers; a single source keeps its ids as they are.

    Args:
      sources: paths as `load_corpus` takes them, or "NAME=PATH" to name a corpus.

    Returns:
      One `Corpus`; `parts` holds each source's own.

    Raises:
      CorpusError: a source cannot be read, or two sources share a name.
    """
    if not sources:
        raise CorpusError("no corpus source given")
    parts = []
    for text in sources:
        name, path = parse_source(str(text))
        parts.append(load_corpus(path, name))
    names = [part.table["corpus"].iloc[0] for part in parts]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CorpusError(f"several corpora are named {repeated}; name them apart with "
                          f"NAME=PATH")
    if len(parts) == 1:
        return parts[0]
    tables = []
    for part in parts:
        table = part.table.copy()
        table["speaker"] = (table["corpus"] + SPEAKER_NAMESPACE_SEPARATOR
                            + table["speaker"].astype(str)).astype(object)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    for column in ("digit", "repetition", "age"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    return Corpus(table=table, problems=tuple(p for part in parts for p in part.problems),
                  format="+".join(part.format for part in parts), source=parts[0].source,
                  parts=tuple(parts))


def corpus_summary_lines(table: pd.DataFrame) -> list[str]:
    """One line per corpus: "ravdess-dev: 16 speakers (8 female, 8 male), 480 clips"."""
    lines = []
    for name, rows in table.groupby("corpus", sort=False):
        speakers = speaker_table(rows)
        counts = speakers["gender"].value_counts()
        lines.append(f"{name}: {len(speakers)} speakers ({counts.get('female', 0)} female, "
                     f"{counts.get('male', 0)} male), {len(rows):,} clips")
    return lines


def speaker_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per speaker.

    Args:
      table: a clip table with `speaker` and `gender` columns (e.g. `Corpus.table`).

    Returns:
      DataFrame with columns `speaker`, `gender`, `clips` (and `corpus` where the table has
      one), sorted by speaker.

    Raises:
      ValueError: a column is missing, or a speaker carries more than one gender.
    """
    missing = {"speaker", "gender"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)}")
    genders = table.groupby("speaker", sort=True)["gender"]
    mixed = genders.nunique()
    mixed = mixed[mixed > 1]
    if len(mixed):
        raise ValueError(f"speakers labeled with more than one gender: {list(mixed.index)}")
    first = genders.first()
    speakers = pd.DataFrame({"speaker": first.index.astype(str), "gender": first.to_numpy(),
                             "clips": genders.size().to_numpy()})
    if "corpus" in table.columns:
        speakers["corpus"] = table.groupby("speaker", sort=True)["corpus"].first().to_numpy()
    return speakers


def summary(corpus: Corpus) -> str:
    """One line: "40 speakers (13 female, 27 male), 1,971 clips; 2 files skipped".

    Args:
      corpus: a loaded corpus.

    Returns:
      The summary line.
    """
    speakers = speaker_table(corpus.table)
    counts = speakers["gender"].value_counts()
    skipped = len(corpus.problems)
    skipped_text = "no files skipped" if skipped == 0 else (
        f"{skipped:,} file{'s' if skipped != 1 else ''} skipped")
    line = (f"{len(speakers)} speakers ({counts.get('female', 0)} female, "
            f"{counts.get('male', 0)} male), {len(corpus.table):,} clips; {skipped_text}")
    if len(corpus.names) > 1:
        line += "".join(f"\n  {part}" for part in corpus_summary_lines(corpus.table))
    return line


def parse_gender(value: Any) -> str | None:
    """Normalizes a gender label ("M", " female ", ...) to "female"/"male"; None if unrecognised."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return _GENDER_WORDS.get(str(value).strip().lower())


# --- AudioMNIST layout -------------------------------------------------------------------------


def _read_folder(root: Path) -> tuple[pd.DataFrame, list[CorpusProblem], str]:
    """Detects which kind of folder `root` is and reads it."""
    candidates = [root, root / "data"]
    for name, fmt, reader in ((JSON_METADATA_NAME, "audiomnist-json", _read_json_metadata),
                              (CSV_METADATA_NAME, "audiomnist-csv", _read_csv_metadata)):
        for folder in candidates:
            if (folder / name).is_file():
                labels = reader(folder / name)
                audio_root = root / "data" if (root / "data").is_dir() else root
                table, problems = _read_layout(audio_root, labels, name)
                _log_count_mismatch(folder / name, labels, table)
                return table, problems, fmt
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        table, problems = _read_manifest(manifest)
        return table, problems, "manifest"
    csvs = sorted(p for p in root.glob("*.csv") if _is_manifest(p))
    if len(csvs) == 1:
        table, problems = _read_manifest(csvs[0])
        return table, problems, "manifest"
    if len(csvs) > 1:
        raise CorpusError(f"{root} holds several manifest CSVs ({[p.name for p in csvs]}); "
                          f"pass the one to use")
    raise CorpusError(f"cannot tell the corpus format of {root}: expected {JSON_METADATA_NAME} or "
                      f"{CSV_METADATA_NAME} (AudioMNIST layout, in the folder or its data/), or "
                      f"a {MANIFEST_NAME} with path,speaker,gender columns")


def _read_json_metadata(path: Path) -> dict[int, _SpeakerMeta]:
    """Reads AudioMNIST's JSON metadata: {"01": {"gender": "male", "age": "30", ...}, ...}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"cannot read speaker metadata {path}: {error}") from error
    if not isinstance(raw, dict):
        raise CorpusError(f"{path} should hold a JSON object keyed by speaker id")
    labels: dict[int, _SpeakerMeta] = {}
    for key, entry in raw.items():
        speaker_id = _speaker_number(key)
        if speaker_id is None or not isinstance(entry, dict):
            logger.warning("ignoring entry %r in %s: not a speaker id with a field dict", key, path)
            continue
        extras = {_column_name(k): _clean_value(v) for k, v in entry.items()
                  if _column_name(k) != "gender" and _column_name(k) not in CORE_COLUMNS}
        if "age" in extras:
            extras["age"] = _parse_age(extras["age"], key, path)
        labels[speaker_id] = _gender_meta(entry.get("gender"), key, path, extras)
    return labels


def _read_csv_metadata(path: Path) -> dict[int, _SpeakerMeta]:
    """Reads the CSV metadata: `SPK ID,0,...,9,Gender` rows such as `1,5,5,...,M`."""
    try:
        # newline="" lets csv handle the CRLF endings the file ships with.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CorpusError(f"cannot read speaker metadata {path}: {error}") from error
    if not rows:
        raise CorpusError(f"{path} is empty; expected a header 'SPK ID,0,...,9,Gender'")
    header = [cell.strip().lower() for cell in rows[0]]
    speaker_col = next((i for i, h in enumerate(header)
                        if h in ("spk id", "spk", "speaker", "speaker id", "speaker_id")), None)
    gender_col = header.index("gender") if "gender" in header else None
    if speaker_col is None or gender_col is None:
        raise CorpusError(f"{path} header {rows[0]} lacks a speaker ('SPK ID') or 'Gender' column")
    labels: dict[int, _SpeakerMeta] = {}
    for row in rows[1:]:
        cells = row + [""] * (len(header) - len(row))
        speaker_id = _speaker_number(cells[speaker_col])
        if speaker_id is None:
            logger.warning("ignoring row %s in %s: speaker id is not a number", row, path)
            continue
        meta = _gender_meta(cells[gender_col], cells[speaker_col], path, {})
        counts = {int(h): int(cells[i]) for i, h in enumerate(header)
                  if h.isdigit() and cells[i].strip().isdigit()}
        meta = dataclasses.replace(meta, digit_counts=counts)
        previous = labels.get(speaker_id)
        if previous is not None and previous.gender != meta.gender:
            meta = _SpeakerMeta(None, f"speaker {speaker_id:02d} has conflicting rows in "
                                      f"{path.name}")
        labels[speaker_id] = meta
    return labels


def _read_layout(audio_root: Path, labels: dict[int, _SpeakerMeta],
                 metadata_name: str) -> tuple[pd.DataFrame, list[CorpusProblem]]:
    """Lists `<audio_root>/NN/*.wav`, labeling each file through its speaker folder."""
    records: list[dict[str, Any]] = []
    problems: list[CorpusProblem] = []
    for path in _audio_files(audio_root, LAYOUT_AUDIO_SUFFIXES):
        relative = path.relative_to(audio_root)
        folder_id = _speaker_number(relative.parts[0]) if len(relative.parts) > 1 else None
        if folder_id is None:
            problems.append(CorpusProblem(str(path), "not inside a numbered speaker folder"))
            continue
        digit = repetition = None
        match = _AUDIOMNIST_NAME.match(path.stem)
        if match:
            if int(match[2]) != folder_id:
                problems.append(CorpusProblem(
                    str(path), f"file name says speaker {int(match[2]):02d} but it is in "
                               f"folder {relative.parts[0]}"))
                continue
            digit, repetition = int(match[1]), int(match[3])
        else:
            # The folder still names the speaker, which is all a gender label needs.
            logger.warning("%s does not match D_NN_R.wav; kept with unknown digit/repetition", path)
        meta = labels.get(folder_id)
        if meta is None:
            problems.append(CorpusProblem(
                str(path), f"speaker {folder_id:02d} has no entry in {metadata_name}"))
            continue
        if meta.gender is None:
            problems.append(CorpusProblem(str(path), meta.reason))
            continue
        records.append({"path": str(path), "speaker": f"{folder_id:02d}", "gender": meta.gender,
                        "digit": digit, "repetition": repetition, **meta.extras})
    return _to_table(records), problems


def _gender_meta(value: Any, key: Any, path: Path, extras: dict[str, Any]) -> _SpeakerMeta:
    """Builds one speaker's entry, explaining an unusable gender."""
    gender = parse_gender(value)
    if gender is None:
        return _SpeakerMeta(None, f"speaker {key} has unrecognised gender {value!r} in {path.name}",
                            extras)
    return _SpeakerMeta(gender, "", extras)


def _log_count_mismatch(path: Path, labels: dict[int, _SpeakerMeta], table: pd.DataFrame) -> None:
    """Logs where the metadata's per-digit counts disagree with the files, which are trusted."""
    listed = {(speaker, digit): n for speaker, meta in labels.items()
              for digit, n in meta.digit_counts.items()}
    if not listed:
        return
    found = table.dropna(subset=["digit"]).groupby(
        [table["speaker"].astype(int), "digit"]).size().to_dict()
    differ = sorted(key for key in set(listed) | set(found)
                    if key[0] in labels and listed.get(key, 0) != found.get(key, 0))
    if differ:
        speaker, digit = differ[0]
        logger.info("%s lists %d clips, %d found; per-digit counts differ for %d speaker/digit "
                    "pair(s), e.g. speaker %02d digit %d: %d listed, %d found; using the files",
                    path, sum(listed.values()), len(table), len(differ), speaker, digit,
                    listed.get(differ[0], 0), found.get(differ[0], 0))


# --- Manifest ----------------------------------------------------------------------------------


def _is_manifest(path: Path) -> bool:
    """Whether a CSV's header has path, speaker and gender columns."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"path", "speaker", "gender"} <= {cell.strip().lower() for cell in header}


def _read_manifest(path: Path) -> tuple[pd.DataFrame, list[CorpusProblem]]:
    """Reads a `path,speaker,gender[,...]` CSV; relative paths are resolved against its folder."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise CorpusError(f"cannot read manifest {path}: {error}") from error
    raw.columns = [str(c).strip() for c in raw.columns]
    lowered = {c.lower(): c for c in raw.columns}
    missing = [c for c in ("path", "speaker", "gender") if c not in lowered]
    if missing:
        raise CorpusError(f"manifest {path} lacks column(s) {missing}; expected "
                          f"path,speaker,gender (extra columns are kept)")
    raw = raw.rename(columns={lowered[c]: c for c in CORE_COLUMNS if c in lowered})
    records: list[dict[str, Any]] = []
    problems: list[CorpusProblem] = []
    seen: set[str] = set()
    for row in raw.to_dict("records"):
        listed = row["path"].strip()
        clip = os.path.abspath(path.parent / listed) if listed else str(path)
        reason = _manifest_row_problem(listed, clip, row, seen)
        if reason:
            problems.append(CorpusProblem(clip, reason))
            continue
        seen.add(clip)
        records.append({**row, "path": clip, "speaker": row["speaker"].strip(),
                        "gender": parse_gender(row["gender"]),
                        "digit": _parse_int(row.get("digit")),
                        "repetition": _parse_int(row.get("repetition"))})
    records, conflicted = _drop_mixed_gender_speakers(records)
    problems.extend(conflicted)
    return _to_table(records), problems


def _manifest_row_problem(listed: str, clip: str, row: dict[str, str], seen: set[str]) -> str:
    """Why a manifest row cannot be used, or "" if it can."""
    if not listed:
        return "manifest row has an empty path"
    if not row["speaker"].strip():
        return "manifest row has no speaker"
    if parse_gender(row["gender"]) is None:
        return f"unrecognised gender {row['gender']!r} (expected M/F/male/female)"
    if Path(clip).suffix.lower() not in MANIFEST_AUDIO_SUFFIXES:
        return f"not an audio file (expected one of {MANIFEST_AUDIO_SUFFIXES})"
    if clip in seen:
        return "listed more than once in the manifest"
    if not os.path.isfile(clip):
        return "listed in the manifest but missing on disk"
    return ""


def _drop_mixed_gender_speakers(
        records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[CorpusProblem]]:
    """Moves every clip of a speaker labeled with both genders into problems."""
    genders: dict[str, set[str]] = defaultdict(set)
    for record in records:
        genders[record["speaker"]].add(record["gender"])
    mixed = {speaker for speaker, found in genders.items() if len(found) > 1}
    kept = [r for r in records if r["speaker"] not in mixed]
    problems = [CorpusProblem(r["path"], f"speaker {r['speaker']} is labeled both female and male")
                for r in records if r["speaker"] in mixed]
    return kept, problems


# --- Shared helpers ----------------------------------------------------------------------------


def _audio_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Audio files under `root`, sorted; hidden files (.DS_Store, macOS `._x.wav`) are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / name for name in filenames
                     if not name.startswith(".") and Path(name).suffix.lower() in suffixes)
    return sorted(found)


def _to_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Builds the clip table with the core columns first and nullable integer columns."""
    table = pd.DataFrame.from_records(records)
    for column in CORE_COLUMNS:
        if column not in table.columns:
            table[column] = pd.Series(dtype=object)
    extra = [c for c in table.columns if c not in CORE_COLUMNS]
    table = table[list(CORE_COLUMNS) + extra]
    for column in ("digit", "repetition", "age"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    for column in ("path", "speaker", "gender"):
        table[column] = table[column].astype(object)
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def _speaker_number(value: Any) -> int | None:
    """"07", "7", 7 -> 7; anything else -> None. Ids are matched numerically across sources."""
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def _column_name(key: Any) -> str:
    """"native speaker" -> "native_speaker"."""
    return re.sub(r"[\s\-]+", "_", str(key).strip().lower())


def _clean_value(value: Any) -> Any:
    """Strings stripped, everything else as text so a column does not mix ints and strings."""
    if value is None:
        return None
    return str(value).strip()


def _parse_int(value: Any) -> int | None:
    """An int from a cell, or None when empty or not an integer."""
    text = "" if value is None else str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _parse_age(value: Any, key: Any, path: Path) -> int | None:
    """An age in years, or None (logged) when missing, unparseable or implausible."""
    age = _parse_int(value)
    if age is None or age not in _PLAUSIBLE_AGE:
        logger.warning("speaker %s in %s: age %r is not a plausible age; left empty",
                       key, path.name, value)
        return None
    return age


def _examples(problems: list[CorpusProblem], limit: int = 3) -> str:
    """A few problem file names, for messages."""
    names = [Path(p.path).name for p in problems[:limit]]
    return ", ".join(names) + (", ..." if len(problems) > limit else "")


def _log_problems(problems: list[CorpusProblem]) -> None:
    """Warns once per distinct reason, naming files, so an unlabeled speaker is one line."""
    by_reason: dict[str, list[CorpusProblem]] = defaultdict(list)
    for problem in problems:
        by_reason[problem.reason].append(problem)
    for reason, group in by_reason.items():
        logger.warning("skipped %d file(s): %s (%s)", len(group), reason, _examples(group))
