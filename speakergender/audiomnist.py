"""AudioMNIST as the default data source: resumable download, safe extraction, verification.

`ensure_audiomnist()` returns a folder holding `data/NN/D_NN_R.wav` and
`data/audioMNIST_meta.txt`, downloading the pinned upstream archive into a cache when no verified
copy is there. The archive streams to `<name>.part` and resumes with HTTP Range requests. It is
extracted into a temporary folder beside the target, verified, moved into place with
`os.replace`, and only then marked complete, so an interrupted run is never taken as a finished
one. Standard library only.

Run `python -m speakergender.audiomnist [--cache-dir DIR] [--url URL]` to fetch it ahead of time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import lzma
import os
import posixpath
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

from speakergender import __version__

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
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")

_CHUNK_BYTES = 1 << 16
_RETRY_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
_EXTRACTING = ".extracting-"


class DownloadError(RuntimeError):
    """AudioMNIST could not be obtained; the message says why and what to do instead."""


class ArchiveError(DownloadError):
    """The archive is corrupt, or holds an entry that would land outside the target."""


class VerificationError(DownloadError):
    """A copy lacks the expected speaker folders, clips or metadata."""


class _Retryable(Exception):
    """One download attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, reached_server: bool):
        super().__init__(reason)
        self.reason = reason
        self.reached_server = reached_server


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
      DownloadError: the archive could not be fetched (`ArchiveError`: it was corrupt or unsafe
        and was removed; `VerificationError`: its contents are incomplete).
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
        download_file(url, archive, progress=progress)
    if sha256 is not None:
        _check_sha256(archive, sha256)
    _extract_verified(archive, target, url, expected_speakers, expected_clips, progress)
    archive.unlink()
    return target


def download_file(url: str, dest: Path, *, progress: bool = True, retries: int = 3,
                  backoff_seconds: float = 1.0, timeout_seconds: float = 60.0) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming what a previous run left there.

    Args:
      url: http(s) URL.
      dest: final file path; `<dest>.part` holds the bytes received so far.
      progress: report progress and retries on stderr.
      retries: further attempts after the connection drops, each resuming with a Range request.
      backoff_seconds: wait before the first retry; it doubles with each further one.
      timeout_seconds: socket timeout for connecting and for each read.

    Returns:
      `dest`, complete.

    Raises:
      DownloadError: the server could not be reached, answered with an error, or kept dropping.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}; for a local copy, "
                         f"extract it and pass its folder with --data-dir")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _note(f"downloading {url}\n  to {dest}", progress)
    reached_server = False
    failures = 0
    while True:
        try:
            _attempt(url, part, progress, timeout_seconds)
            break
        except _Retryable as err:
            # Before the server has answered once, a failure means no network: say so at once.
            reached_server = reached_server or err.reached_server
            failures += 1
            if not reached_server:
                raise DownloadError(_failure_message(url, err.reason)) from None
            if failures > retries:
                raise DownloadError(_failure_message(
                    url, f"{err.reason}; gave up after {failures} attempts (the {_size(part)} "
                         f"received so far stay in {part}, and the next run resumes from there)"
                )) from None
            delay = backoff_seconds * 2 ** (failures - 1)
            _note(f"download interrupted ({err.reason}); resuming in {delay:.1f} s", progress)
            time.sleep(delay)
    os.replace(part, dest)
    return dest


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
    except (DownloadError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run again to resume the download", file=sys.stderr)
        return 130
    print(path)
    return 0


# --- cache state -------------------------------------------------------------------------------

def _is_complete(target: Path, expected_speakers: int, expected_clips: int, progress: bool) -> bool:
    if not (target / COMPLETE_MARKER).is_file():
        return False
    try:
        verify_audiomnist(target, expected_speakers, expected_clips)
    except VerificationError as err:
        _note(f"the cached copy no longer verifies, fetching it again: {err}", progress)
        (target / COMPLETE_MARKER).unlink()
        return False
    return True


def _remove_leftovers(target: Path, progress: bool) -> None:
    """Remove what an interrupted extraction left: temporary folders, an unmarked target."""
    leftovers = list(target.parent.glob(f".{target.name}{_EXTRACTING}*"))
    if target.exists():
        leftovers.append(target)
    for path in leftovers:
        _note(f"removing incomplete extraction {path}", progress)
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


# --- download ----------------------------------------------------------------------------------

def _attempt(url: str, part: Path, progress: bool, timeout_seconds: float) -> None:
    """Fetch the rest of `url` into `part`; returns once `part` is complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"speakergender/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as err:
        with err:
            _handle_http_error(err, url, part, offset)
        return
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Retryable(_describe(err), reached_server=False) from None
    with response:
        _stream(response, url, part, offset, progress)


def _handle_http_error(err: urllib.error.HTTPError, url: str, part: Path, offset: int) -> None:
    if err.code == 416 and offset:
        # The range starts at or past the end: the partial file may already be whole.
        total = _content_range(err.headers.get("Content-Range"))[1]
        if total is None or total == offset:
            return
        part.unlink()
        raise _Retryable(f"server has {total} bytes but {offset} were on disk; starting over",
                         reached_server=True)
    if err.code in _RETRY_HTTP_CODES:
        raise _Retryable(_describe(err), reached_server=True)
    raise DownloadError(_failure_message(url, _describe(err)))


def _stream(response: http.client.HTTPResponse, url: str, part: Path, offset: int,
            progress: bool) -> None:
    length = _int_or_none(response.headers.get("Content-Length"))
    if offset and response.status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            part.unlink()
            raise _Retryable(f"server resumed at byte {start}, not {offset}; starting over",
                             reached_server=True)
        mode = "ab"
    elif response.status == 200:
        if offset:
            _note("server ignored the range request; downloading from the start", progress)
        offset, total, mode = 0, length, "wb"
    else:
        raise DownloadError(_failure_message(url, f"unexpected HTTP status {response.status}"))
    received = 0
    meter = _Progress(total, offset, progress)
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as err:
                    raise _Retryable(f"connection dropped after {offset + received} bytes "
                                     f"({_describe(err)})", reached_server=True) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                meter.update(offset + received)
    finally:
        meter.close()
    # http.client returns a short body without complaint when the server closes early.
    if length is not None and received < length:
        raise _Retryable(f"connection closed after {offset + received} of "
                         f"{offset + length} bytes", reached_server=True)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` or `bytes */TOTAL` -> (START, TOTAL), None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (_int_or_none(start), None if total == "*" else int(total))


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, socket.gaierror):
        return f"name resolution failed ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


def _failure_message(url: str, reason: str) -> str:
    return (f"could not download AudioMNIST from {url}: {reason}.\n"
            f"Without network access, download the archive elsewhere, extract it and pass the "
            f"extracted folder (the one that holds data/) with --data-dir; or point --cache-dir "
            f"(or ${CACHE_ENV}) at a cache that already holds a complete copy.")


class _Progress:
    """Throttled byte counter on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, total: int | None, done: int, enabled: bool):
        self._stream = sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._interval = 0.2 if self._tty else 5.0
        self._total = total
        self._first = done
        self._done = done
        self._start = time.monotonic()
        self._last = float("-inf")
        self._width = 0
        self.update(done)

    def update(self, done: int, force: bool = False) -> None:
        self._done = done
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < self._interval):
            return
        self._last = now
        line = self._line(now)
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        self.update(self._done, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        rate = (self._done - self._first) / elapsed if elapsed > 0 else 0.0
        text = f"  {_format_bytes(self._done)}"
        if self._total:
            text += f" / {_format_bytes(self._total)} ({100 * self._done // self._total}%)"
        if rate > 0:
            text += f"  {_format_bytes(rate)}/s"
            if self._total and self._total > self._done:
                text += f"  {_format_duration((self._total - self._done) / rate)} left"
        return text


def _format_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _size(path: Path) -> str:
    return _format_bytes(path.stat().st_size if path.exists() else 0)


def _note(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


# --- archive -----------------------------------------------------------------------------------

def _archive_suffix(url: str) -> str:
    path = urllib.parse.urlsplit(url).path.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            return suffix
    raise ValueError(f"{url!r} does not end in one of {', '.join(ARCHIVE_SUFFIXES)}")


def _check_sha256(archive: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(archive, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        archive.unlink()
        raise ArchiveError(f"{archive.name} has sha256 {digest.hexdigest()}, expected {expected}; "
                           f"removed it so the next run downloads it again")


def _extract_verified(archive: Path, target: Path, url: str, expected_speakers: int,
                      expected_clips: int, progress: bool) -> None:
    """Extract into a temporary folder beside `target`, verify, move into place, then mark."""
    _note(f"extracting {archive.name}", progress)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_EXTRACTING}", dir=target.parent))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                _extract_zip(archive, staging)
            else:
                _extract_tar(archive, staging)
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


def _extract_tar(archive: Path, dest: Path) -> None:
    corrupt = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
    try:
        with tarfile.open(archive, "r:*") as tar:
            try:
                members = tar.getmembers()
            except OSError as err:  # bz2 reports bad data as a plain OSError
                raise tarfile.ReadError(str(err)) from None
            _check_tar_members(members)
            # The checks above come first; the "data" filter is a second line of defence.
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as err:
        raise ArchiveError(f"refusing archive entry {err.tarinfo.name!r}: {err}") from None
    except corrupt as err:
        raise ArchiveError(f"{archive.name} is not a readable tar archive "
                           f"({type(err).__name__}: {err})") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    corrupt = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                reason = _unsafe_path(info.filename)
                if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                    link = zipped.read(info).decode("utf-8", "replace")
                    reason = _unsafe_link(_parts(info.filename)[:-1], link, set())
                if reason:
                    raise ArchiveError(f"refusing archive entry {info.filename!r}: {reason}")
            zipped.extractall(dest)
    except corrupt as err:
        raise ArchiveError(f"{archive.name} is not a readable zip archive "
                           f"({type(err).__name__}: {err})") from None


def _check_tar_members(members: Iterable[tarfile.TarInfo]) -> None:
    """Refuse absolute paths, '..', links leading out, special files, entries under symlinks.

    Link targets are resolved by name only, which matches the file system as long as no entry
    sits under a symlink and no link target passes through one: both are refused.
    """
    members = list(members)
    symlinks = {"/".join(_parts(m.name)) for m in members if m.issym()}
    for member in members:
        reason = _unsafe_path(member.name)
        parts = _parts(member.name)
        if reason is None and any("/".join(parts[:k]) in symlinks for k in range(1, len(parts))):
            reason = "it lies under a symlink"
        if reason is None and member.issym():
            reason = _unsafe_link(parts[:-1], member.linkname, symlinks)
        elif reason is None and member.islnk():
            reason = _unsafe_link([], member.linkname, symlinks)
            if reason is None and ".." in _parts(member.linkname):
                reason = f"hard link target {member.linkname!r} has a '..' component"
        elif reason is None and not (member.isfile() or member.isdir()):
            reason = "it is a device or FIFO"
        if reason:
            raise ArchiveError(f"refusing archive entry {member.name!r}: {reason}")


def _unsafe_path(name: str) -> str | None:
    if _is_absolute(name):
        return "absolute path"
    if ".." in _parts(name):
        return "'..' path component"
    return None


def _unsafe_link(start: list[str], link: str, symlinks: set[str]) -> str | None:
    """Why a link from folder `start` to `link` is unsafe, or None when it stays inside."""
    if _is_absolute(link):
        return f"link to absolute path {link!r}"
    resolved = list(start)
    components = _parts(link)
    for index, component in enumerate(components):
        if component == "..":
            if not resolved:
                return f"link to {link!r} points outside the target"
            resolved.pop()
            continue
        resolved.append(component)
        if index < len(components) - 1 and "/".join(resolved) in symlinks:
            return f"link to {link!r} passes through another symlink"
    return None


def _parts(name: str) -> list[str]:
    return [part for part in re.split(r"[\\/]+", name) if part not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None


if __name__ == "__main__":
    sys.exit(main())
