"""HTTP(S) download to a file: resume with Range requests, retries with backoff, sha256 check.

The body streams to `<dest>.part` and is renamed to `dest` only once complete, so a file at
`dest` is always whole; a `.part` left by an interrupted run is resumed, not restarted.
Standard library only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from speakergender import __version__
from speakergender.progress import ByteProgress, format_bytes, note

_CHUNK_BYTES = 1 << 16
_RETRY_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})


class DownloadError(RuntimeError):
    """A file could not be downloaded; `reason` says why, without the URL."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


class ChecksumError(DownloadError):
    """A downloaded file's digest is not the one expected."""


class _Retryable(Exception):
    """One download attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, reached_server: bool):
        super().__init__(reason)
        self.reason = reason
        self.reached_server = reached_server


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
      ValueError: the URL is not http(s).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    note(f"downloading {url}\n  to {dest}", progress)
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
                raise _failure(url, err.reason) from None
            if failures > retries:
                raise _failure(
                    url, f"{err.reason}; gave up after {failures} attempts (the {_size(part)} "
                         f"received so far stay in {part}, and the next run resumes from there)"
                ) from None
            delay = backoff_seconds * 2 ** (failures - 1)
            note(f"download interrupted ({err.reason}); resuming in {delay:.1f} s", progress)
            time.sleep(delay)
    os.replace(part, dest)
    return dest


def verify_sha256(path: Path, expected: str) -> None:
    """Check that the file at `path` has the sha256 digest `expected`.

    Args:
      path: file to hash.
      expected: hex digest, either case.

    Raises:
      ChecksumError: naming the digest found; the file is left in place.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        raise ChecksumError(f"{Path(path).name} has sha256 {digest.hexdigest()}, "
                            f"expected {expected}")


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
    raise _failure(url, _describe(err))


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
            note("server ignored the range request; downloading from the start", progress)
        offset, total, mode = 0, length, "wb"
    else:
        raise _failure(url, f"unexpected HTTP status {response.status}")
    received = 0
    meter = ByteProgress(total, offset, progress)
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


def _failure(url: str, reason: str) -> DownloadError:
    return DownloadError(f"could not download {url}: {reason}", reason)


def _size(path: Path) -> str:
    return format_bytes(path.stat().st_size if path.exists() else 0)
