"""AudioMNIST as the default data source: where it comes from, what a complete copy holds.

`ensure_audiomnist()` returns a folder holding `data/NN/D_NN_R.wav` and
`data/audioMNIST_meta.txt`, downloading the pinned upstream archive into a cache when no verified
copy is there (`downloads.download_file`: resumable). The archive is extracted
(`archives.extract_archive`: safe) into a temporary folder beside the target, verified, moved
into place with `os.replace`, and only then marked complete, so an interrupted run is never taken
as a finished one. Standard library only.

Run `python -m speakergender.audiomnist [--cache-dir DIR] [--url URL]` to fetch it ahead of time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path

from speakergender.archives import ARCHIVE_SUFFIXES, ArchiveError, archive_suffix, extract_archive
from speakergender.downloads import ChecksumError, DownloadError, download_file, verify_sha256
from speakergender.progress import note

# The upstream commit of github.com/soerenab/AudioMNIST the default download is pinned to. At
# this commit data/audioMNIST_meta.txt describes all 60 speakers; the earlier commit that added
# the recordings (6c5eb77) lacks speakers 17, 22 and 34. To move the pin, put another full commit
# id here (from the repository's history) and check that a fresh download still verifies: copies
# are cached per URL, so a new pin downloads beside the old copy instead of overwriting it.
AUDIOMNIST_COMMIT = "ce04129aaa56d47d11a8d9cc1247bac2cafac9b7"
AUDIOMNIST_URL = f"https://github.com/soerenab/AudioMNIST/archive/{AUDIOMNIST_COMMIT}.tar.gz"
EXPECTED_SPEAKERS = 60
EXPECTED_CLIPS = 30000
METADATA_NAME = "audioMNIST_meta.txt"
CACHE_ENV = "SPEAKERGENDER_CACHE"
COMPLETE_MARKER = ".speakergender-complete"

_EXTRACTING = ".extracting-"


class VerificationError(RuntimeError):
    """A copy lacks the expected speaker folders, clips or metadata."""


def default_cache_dir() -> Path:
    """The cache folder: `$SPEAKERGENDER_CACHE` if set, else `~/.cache/speakergender`."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "speakergender"


def audiomnist_dir(cache_dir: Path | None = None, url: str | None = None) -> Path:
    """Where `ensure_audiomnist` keeps the copy downloaded from `url`.

    Args:
      cache_dir: cache folder; `default_cache_dir()` when None.
      url: archive URL; the pinned `AUDIOMNIST_URL` when None.

    Returns:
      `<cache>/audiomnist/<archive stem>-<8 hex digits of the URL's sha256>`.
    """
    url = url or AUDIOMNIST_URL
    suffix = _archive_suffix(url)
    basename = posixpath.basename(urllib.parse.urlsplit(url).path)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", basename[: -len(suffix)])[:60] or "audiomnist"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return Path(cache_dir or default_cache_dir()) / "audiomnist" / f"{stem}-{digest}"


def ensure_audiomnist(cache_dir: Path | None = None, url: str | None = None, progress: bool = True,
                      *, sha256: str | None = None, expected_speakers: int = EXPECTED_SPEAKERS,
                      expected_clips: int = EXPECTED_CLIPS) -> Path:
    """Return the folder of a verified AudioMNIST copy, downloading and extracting it if missing.

    Args:
      cache_dir: cache folder; `default_cache_dir()` when None.
      url: archive URL ending in .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar or .zip; the pinned
        `AUDIOMNIST_URL` when None.
      progress: report progress and retries on stderr.
      sha256: expected hex digest of the archive; not checked when None (GitHub's generated
        archives are not guaranteed to stay byte-identical).
      expected_speakers: speaker folders the copy must hold.
      expected_clips: WAV files the copy must hold across all speaker folders.

    Returns:
      The folder that contains `data/01..NN/*.wav` and `data/audioMNIST_meta.txt`.

    Raises:
      DownloadError: the archive could not be fetched.
      ArchiveError: it was corrupt, unsafe or not the expected sha256, and was removed.
      VerificationError: its contents are incomplete.
      ValueError: the URL does not name a supported archive type.
    """
    url = url or AUDIOMNIST_URL
    target = audiomnist_dir(cache_dir, url)
    if _is_complete(target, expected_speakers, expected_clips, progress):
        return target
    _remove_leftovers(target, progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.with_name(target.name + _archive_suffix(url))
    if not archive.exists():
        _download(url, archive, progress)
    if sha256 is not None:
        _check_sha256(archive, sha256)
    _extract_verified(archive, target, url, expected_speakers, expected_clips, progress)
    archive.unlink()
    return target


def verify_audiomnist(root: Path, expected_speakers: int = EXPECTED_SPEAKERS,
                      expected_clips: int = EXPECTED_CLIPS) -> None:
    """Check that `root/data` holds the expected speaker folders, WAVs and metadata.

    Args:
      root: folder that contains `data/`.
      expected_speakers: number of speaker folders (names made of digits) under `data/`.
      expected_clips: number of `.wav` files across those folders.

    Raises:
      VerificationError: naming every problem found, including speaker ids the metadata lacks.
    """
    problems = _verification_problems(Path(root), expected_speakers, expected_clips)
    if problems:
        raise VerificationError(f"AudioMNIST copy at {root} is incomplete: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    """Download and verify AudioMNIST, then print its folder; errors go to stderr, exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.audiomnist",
        description="Download (or find in the cache) and verify AudioMNIST; print its folder.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"cache folder (default: ${CACHE_ENV} or ~/.cache/speakergender)")
    parser.add_argument("--url", default=None,
                        help=f"archive to download (default: {AUDIOMNIST_URL})")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        path = ensure_audiomnist(args.cache_dir, args.url, progress=not args.quiet)
    except (DownloadError, ArchiveError, VerificationError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run again to resume the download", file=sys.stderr)
        return 130
    print(path)
    return 0


# --- download and extraction -------------------------------------------------------------------

def _archive_suffix(url: str) -> str:
    suffix = archive_suffix(urllib.parse.urlsplit(url).path)
    if suffix is None:
        raise ValueError(f"{url!r} does not end in one of {', '.join(ARCHIVE_SUFFIXES)}")
    return suffix


def _download(url: str, archive: Path, progress: bool) -> None:
    """`download_file`, with errors that say how to do without the network."""
    try:
        download_file(url, archive, progress=progress)
    except DownloadError as err:
        raise DownloadError(_failure_message(url, err.reason), err.reason) from None
    except ValueError as err:
        raise ValueError(f"{err}; for a local copy, extract it and pass its folder with "
                         f"--data-dir") from None


def _failure_message(url: str, reason: str) -> str:
    return (f"could not download AudioMNIST from {url}: {reason}.\n"
            f"Without network access, download the archive elsewhere, extract it and pass the "
            f"extracted folder (the one that holds data/) with --data-dir; or point --cache-dir "
            f"(or ${CACHE_ENV}) at a cache that already holds a complete copy.")


def _check_sha256(archive: Path, expected: str) -> None:
    try:
        verify_sha256(archive, expected)
    except ChecksumError as err:
        archive.unlink()
        raise ArchiveError(f"{err}; removed it so the next run downloads it again") from None


def _extract_verified(archive: Path, target: Path, url: str, expected_speakers: int,
                      expected_clips: int, progress: bool) -> None:
    """Extract into a temporary folder beside `target`, verify, move into place, then mark."""
    note(f"extracting {archive.name}", progress)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_EXTRACTING}", dir=target.parent))
    try:
        try:
            extract_archive(archive, staging)
        except ArchiveError as err:
            archive.unlink()
            raise ArchiveError(f"{err}; removed {archive} so the next run downloads it again") \
                from None
        root = _copy_root(staging)
        problems = _verification_problems(root, expected_speakers, expected_clips)
        if problems:
            raise VerificationError(
                f"{archive} does not hold a complete AudioMNIST copy: {'; '.join(problems)}. "
                f"The archive is kept: delete it to download it again, or pass another --url")
        os.replace(root, target)
        _write_marker(target, url, expected_speakers, expected_clips)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_root(staging: Path) -> Path:
    """The extracted folder meant to hold data/: the staging folder itself or its one subfolder."""
    folders = [path for path in staging.iterdir() if path.is_dir()]
    if not (staging / "data").is_dir() and len(folders) == 1:
        return folders[0]
    return staging


# --- cache state -------------------------------------------------------------------------------

def _is_complete(target: Path, expected_speakers: int, expected_clips: int, progress: bool) -> bool:
    if not (target / COMPLETE_MARKER).is_file():
        return False
    try:
        verify_audiomnist(target, expected_speakers, expected_clips)
    except VerificationError as err:
        note(f"the cached copy no longer verifies, fetching it again: {err}", progress)
        (target / COMPLETE_MARKER).unlink()
        return False
    return True


def _remove_leftovers(target: Path, progress: bool) -> None:
    """Remove what an interrupted extraction left: temporary folders, an unmarked target."""
    leftovers = list(target.parent.glob(f".{target.name}{_EXTRACTING}*"))
    if target.exists():
        leftovers.append(target)
    for path in leftovers:
        note(f"removing incomplete extraction {path}", progress)
        shutil.rmtree(path)


def _write_marker(target: Path, url: str, speakers: int, clips: int) -> None:
    marker = target / COMPLETE_MARKER
    staging = marker.with_name(marker.name + ".tmp")
    staging.write_text(json.dumps({"url": url, "speakers": speakers, "clips": clips}) + "\n",
                       encoding="utf-8")
    os.replace(staging, marker)


def _verification_problems(root: Path, expected_speakers: int, expected_clips: int) -> list[str]:
    data = root / "data"
    if not data.is_dir():
        return ["no data/ folder"]
    speakers = sorted(entry.name for entry in os.scandir(data)
                      if entry.is_dir() and entry.name.isdigit())
    clips = sum(1 for speaker in speakers for entry in os.scandir(data / speaker)
                if entry.name.lower().endswith(".wav") and entry.is_file())
    problems = []
    if len(speakers) != expected_speakers:
        problems.append(f"{len(speakers)} speaker folders, expected {expected_speakers}")
    if clips != expected_clips:
        problems.append(f"{clips} WAV files, expected {expected_clips}")
    problems.extend(_metadata_problems(data / METADATA_NAME, speakers))
    return problems


def _metadata_problems(meta: Path, speakers: list[str]) -> list[str]:
    if not meta.is_file():
        return [f"no data/{METADATA_NAME}"]
    try:
        entries = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return [f"data/{METADATA_NAME} is not valid JSON ({err})"]
    if not isinstance(entries, dict):
        return [f"data/{METADATA_NAME} is not a JSON object keyed by speaker id"]
    described = {_speaker_key(key) for key in entries}
    missing = [speaker for speaker in speakers if _speaker_key(speaker) not in described]
    if not missing:
        return []
    return [f"data/{METADATA_NAME} describes {len(speakers) - len(missing)} of {len(speakers)} "
            f"speakers; missing speaker ids: {', '.join(missing)} (older copies of the metadata "
            f"lack some speakers: use the pinned commit {AUDIOMNIST_COMMIT} or a later one)"]


def _speaker_key(key: str) -> int | str:
    key = key.strip()
    return int(key) if key.isdigit() else key


if __name__ == "__main__":
    sys.exit(main())
