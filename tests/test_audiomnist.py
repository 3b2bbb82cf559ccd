"""AudioMNIST download, resume, safe extraction and verification against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import json
import random
import socket
import tarfile
import threading
import wave
import zipfile
from pathlib import Path

import pytest

from speakergender import audiomnist
from speakergender.audiomnist import (
    COMPLETE_MARKER,
    ArchiveError,
    DownloadError,
    VerificationError,
    audiomnist_dir,
    download_file,
    ensure_audiomnist,
)

SPEAKERS = ("01", "02", "03")
DIGITS = 2
REPETITIONS = 2
CLIPS = len(SPEAKERS) * DIGITS * REPETITIONS
TOP = "AudioMNIST-0123abcd"
TINY = dict(expected_speakers=len(SPEAKERS), expected_clips=CLIPS)


class ArchiveServer:
    """Serves byte strings by path on 127.0.0.1, with Range support and a one-shot drop."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_ranges = True
        self.drop_after: int | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                byte_range = self.headers.get("Range")
                server.requests.append((self.path, byte_range))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if byte_range and server.honour_ranges:
                    start = int(byte_range.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.drop_after is not None:
                    self.wfile.write(body[start:start + server.drop_after])
                    server.drop_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() from waiting half a second per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,),
                                        daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> "ArchiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for scheme in ("http", "https", "all"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with ArchiveServer() as running:
        yield running


def _wav_bytes(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        # Noise keeps the archive from compressing to almost nothing, so a drop lands mid-body.
        wav.writeframes(rng.randbytes(800))
    return buffer.getvalue()


def _corpus_files(meta_speakers: tuple[str, ...] = SPEAKERS) -> dict[str, bytes]:
    """AudioMNIST's layout, relative to the copy's root: data/NN/D_NN_R.wav and the metadata."""
    rng = random.Random(0)
    files = {f"data/{speaker}/{digit}_{speaker}_{rep}.wav": _wav_bytes(rng)
             for speaker in SPEAKERS for digit in range(DIGITS) for rep in range(REPETITIONS)}
    meta = {speaker: {"gender": "female" if int(speaker) % 2 else "male", "age": "25"}
            for speaker in meta_speakers}
    files[f"data/{audiomnist.METADATA_NAME}"] = json.dumps(meta, indent=4).encode()
    return files


def _tar_gz(files: dict[str, bytes], extra: list[tuple[tarfile.TarInfo, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(f"{TOP}/{name}", data)
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_marker_anywhere(root: Path) -> bool:
    return not list(root.rglob(COMPLETE_MARKER))


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_clean_download_verifies_and_second_run_downloads_nothing(server, tmp_path, suffix):
    archive = _tar_gz(_corpus_files()) if suffix == ".tar.gz" else _zip(_corpus_files())
    server.files[f"/AudioMNIST{suffix}"] = archive
    url = server.url(f"/AudioMNIST{suffix}")

    path = ensure_audiomnist(tmp_path, url, progress=False, **TINY)

    assert path == audiomnist_dir(tmp_path, url)
    assert sorted(p.name for p in (path / "data").iterdir() if p.is_dir()) == list(SPEAKERS)
    wav = "data/02/1_02_1.wav"
    assert (path / wav).read_bytes() == _corpus_files()[wav]
    assert (path / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no archive, no temp dir
    assert len(server.requests) == 1

    assert ensure_audiomnist(tmp_path, url, progress=False, **TINY) == path
    assert len(server.requests) == 1


def test_cached_copy_that_no_longer_verifies_is_fetched_again(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files())
    path = ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False, **TINY)
    (path / "data" / "03" / "0_03_0.wav").unlink()

    assert ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False, **TINY) == path
    assert (path / "data" / "03" / "0_03_0.wav").is_file()
    assert len(server.requests) == 2


def test_dropped_connection_resumes_with_range_request(server, tmp_path):
    body = _tar_gz(_corpus_files())
    assert len(body) > 4000
    server.files["/a.tar.gz"] = body
    server.drop_after = 1500
    dest = tmp_path / "a.tar.gz"

    download_file(server.url("/a.tar.gz"), dest, progress=False, backoff_seconds=0.01)

    assert dest.read_bytes() == body
    assert not dest.with_name("a.tar.gz.part").exists()
    assert server.requests == [("/a.tar.gz", None), ("/a.tar.gz", "bytes=1500-")]


def test_dropped_connection_gives_up_after_retries_and_keeps_part(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files())
    server.drop_after = 1000
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match="gave up after 1 attempts"):
        download_file(server.url("/a.tar.gz"), dest, progress=False, retries=0)
    assert dest.with_name("a.tar.gz.part").stat().st_size == 1000


@pytest.mark.parametrize("honour_ranges, part_bytes, expected_range", [
    (True, 1234, "bytes=1234-"),    # 206: append to what is there
    (False, 1234, "bytes=1234-"),   # 200: server ignored the range, start over
    (True, None, None),             # .part already whole: 416, nothing more to fetch
])
def test_resumes_existing_part_file(server, tmp_path, honour_ranges, part_bytes, expected_range):
    body = _tar_gz(_corpus_files())
    server.files["/a.tar.gz"] = body
    server.honour_ranges = honour_ranges
    dest = tmp_path / "a.tar.gz"
    part = body[:part_bytes] if part_bytes else body
    dest.with_name("a.tar.gz.part").write_bytes(part)

    download_file(server.url("/a.tar.gz"), dest, progress=False)

    assert dest.read_bytes() == body
    assert server.requests == [("/a.tar.gz", expected_range or f"bytes={len(body)}-")]


def test_progress_is_reported_on_stderr(server, tmp_path, capsys):
    server.files["/a.tar.gz"] = b"x" * 5000
    download_file(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=True)
    err = capsys.readouterr().err
    assert "5.0 kB / 5.0 kB (100%)" in err
    assert "\r" not in err  # plain lines when stderr is not a terminal


@pytest.mark.parametrize("name, body", [
    ("/a.tar.gz", b"this is not an archive at all\n" * 50),
    ("/a.tar.gz", _tar_gz(_corpus_files())[:3000]),  # truncated gzip stream
    ("/a.zip", b"PK\x03\x04 not really a zip" * 40),
])
def test_corrupt_archive_is_removed_and_nothing_marked_complete(server, tmp_path, name, body):
    server.files[name] = body
    url = server.url(name)
    with pytest.raises(ArchiveError, match="removed .* so the next run downloads it again"):
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    assert list(audiomnist_dir(tmp_path, url).parent.iterdir()) == []
    assert _no_marker_anywhere(tmp_path)


@pytest.mark.parametrize("extra, entry", [
    (lambda root: [(tarfile.TarInfo(str(root / "evil.txt")), b"pwned")], "evil.txt"),
    (lambda root: [(tarfile.TarInfo("../evil.txt"), b"pwned")], "../evil.txt"),
    (lambda root: [(tarfile.TarInfo(f"{TOP}/data/../../../evil.txt"), b"pwned")], "evil.txt"),
    (lambda root: [_link(f"{TOP}/escape", "../../.."),
                   (tarfile.TarInfo(f"{TOP}/escape/evil.txt"), b"pwned")], f"{TOP}/escape"),
    (lambda root: [_link(f"{TOP}/abs", str(root))], f"{TOP}/abs"),
    (lambda root: [_link(f"{TOP}/here", "."), _link(f"{TOP}/here/up", "..")], f"{TOP}/here/up"),
    (lambda root: [_link(f"{TOP}/hard", "../../etc/passwd", tarfile.LNKTYPE)], f"{TOP}/hard"),
], ids=["absolute", "dotdot", "dotdot-inside", "symlink-out", "symlink-absolute",
        "through-symlink", "hardlink-out"])
def test_malicious_tar_is_refused_before_extracting(server, tmp_path, extra, entry):
    cache = tmp_path / "cache"
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files(), extra(tmp_path))
    url = server.url("/a.tar.gz")
    with pytest.raises(ArchiveError, match="refusing archive entry") as caught:
        ensure_audiomnist(cache, url, progress=False, **TINY)
    assert entry in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert list(audiomnist_dir(cache, url).parent.iterdir()) == []  # nothing extracted, no temp


def test_symlink_inside_the_copy_is_allowed(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files(), [_link(f"{TOP}/speakers", "data")])
    path = ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False, **TINY)
    assert (path / "speakers" / "01").is_dir()


def test_malicious_zip_is_refused(server, tmp_path):
    cache = tmp_path / "cache"
    server.files["/a.zip"] = _zip(_corpus_files(), {"../evil.txt": b"pwned"})
    with pytest.raises(ArchiveError, match="refusing archive entry '../evil.txt'"):
        ensure_audiomnist(cache, server.url("/a.zip"), progress=False, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert _no_marker_anywhere(cache)


def test_interrupted_extraction_is_not_taken_as_complete(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files())
    url = server.url("/a.tar.gz")
    target = audiomnist_dir(tmp_path, url)
    # What a crash leaves: a staging folder, and a moved-in copy whose marker was never written.
    leftover = target.parent / f".{target.name}.extracting-x1y2"
    for root in (leftover, target):
        for name, data in _corpus_files().items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)

    assert ensure_audiomnist(tmp_path, url, progress=False, **TINY) == target

    assert len(server.requests) == 1
    assert not leftover.exists()
    assert (target / COMPLETE_MARKER).is_file()


def test_metadata_lacking_speakers_names_them(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files(meta_speakers=("01",)))
    url = server.url("/a.tar.gz")
    missing = "describes 1 of 3 speakers; missing speaker ids: 02, 03"
    with pytest.raises(VerificationError, match=missing):
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    assert not audiomnist_dir(tmp_path, url).exists()
    assert _no_marker_anywhere(tmp_path)


def test_wrong_counts_fail_verification(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files())
    with pytest.raises(VerificationError, match="3 speaker folders, expected 60; 12 WAV files"):
        ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False)


def test_sha256_mismatch_removes_archive(server, tmp_path):
    server.files["/a.tar.gz"] = _tar_gz(_corpus_files())
    url = server.url("/a.tar.gz")
    with pytest.raises(ArchiveError, match="expected 00ff"):
        ensure_audiomnist(tmp_path, url, progress=False, sha256="00ff", **TINY)
    assert list(audiomnist_dir(tmp_path, url).parent.iterdir()) == []


def test_no_network_raises_helpful_download_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/AudioMNIST.tar.gz"
    with pytest.raises(DownloadError) as caught:
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    message = str(caught.value)
    assert url in message
    assert "connection refused" in message
    assert "--data-dir" in message and "--cache-dir" in message


def test_http_error_is_named(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_audiomnist(tmp_path, server.url("/missing.tar.gz"), progress=False, **TINY)


def test_main_prints_error_without_traceback(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/AudioMNIST.tar.gz"
    assert audiomnist.main(["--cache-dir", str(tmp_path), "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: could not download AudioMNIST from" in captured.err
    assert "Traceback" not in captured.err


def test_unsupported_url_suffix_is_reported_by_main(tmp_path, capsys):
    assert audiomnist.main(["--cache-dir", str(tmp_path), "--url", "http://127.0.0.1:9/x.rar"]) == 1
    assert "does not end in one of" in capsys.readouterr().err


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(audiomnist.CACHE_ENV, str(tmp_path))
    assert audiomnist.default_cache_dir() == tmp_path
    monkeypatch.delenv(audiomnist.CACHE_ENV)
    assert audiomnist.default_cache_dir() == Path.home() / ".cache" / "speakergender"


def test_default_url_is_pinned_to_the_commit():
    assert audiomnist.AUDIOMNIST_URL.endswith(f"/archive/{audiomnist.AUDIOMNIST_COMMIT}.tar.gz")
    assert len(audiomnist.AUDIOMNIST_COMMIT) == 40
