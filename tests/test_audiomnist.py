"""AudioMNIST: download into the cache, verification, cleanup after failures, the command line."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from corpus_archives import CLIPS, SPEAKERS, corpus_files, tar_gz, zip_bytes
from local_http import clear_proxies, closed_port
from speakergender import audiomnist
from speakergender.archives import ArchiveError
from speakergender.audiomnist import (
    COMPLETE_MARKER,
    VerificationError,
    audiomnist_dir,
    ensure_audiomnist,
)
from speakergender.downloads import DownloadError

TINY = dict(expected_speakers=len(SPEAKERS), expected_clips=CLIPS)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)


def _no_marker_anywhere(root: Path) -> bool:
    return not list(root.rglob(COMPLETE_MARKER))


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_clean_download_verifies_and_second_run_downloads_nothing(server, tmp_path, suffix):
    archive = tar_gz(corpus_files()) if suffix == ".tar.gz" else zip_bytes(corpus_files())
    server.files[f"/AudioMNIST{suffix}"] = archive
    url = server.url(f"/AudioMNIST{suffix}")

    path = ensure_audiomnist(tmp_path, url, progress=False, **TINY)

    assert path == audiomnist_dir(tmp_path, url)
    assert sorted(p.name for p in (path / "data").iterdir() if p.is_dir()) == list(SPEAKERS)
    wav = "data/02/1_02_1.wav"
    assert (path / wav).read_bytes() == corpus_files()[wav]
    assert (path / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no archive, no temp dir
    assert len(server.requests) == 1

    assert ensure_audiomnist(tmp_path, url, progress=False, **TINY) == path
    assert len(server.requests) == 1


def test_cached_copy_that_no_longer_verifies_is_fetched_again(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files())
    path = ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False, **TINY)
    (path / "data" / "03" / "0_03_0.wav").unlink()

    assert ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False, **TINY) == path
    assert (path / "data" / "03" / "0_03_0.wav").is_file()
    assert len(server.requests) == 2


@pytest.mark.parametrize("name, body", [
    ("/a.tar.gz", b"this is not an archive at all\n" * 50),
    ("/a.tar.gz", tar_gz(corpus_files())[:3000]),  # truncated gzip stream
    ("/a.zip", b"PK\x03\x04 not really a zip" * 40),
])
def test_corrupt_archive_is_removed_and_nothing_marked_complete(server, tmp_path, name, body):
    server.files[name] = body
    url = server.url(name)
    with pytest.raises(ArchiveError, match="removed .* so the next run downloads it again"):
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    assert list(audiomnist_dir(tmp_path, url).parent.iterdir()) == []
    assert _no_marker_anywhere(tmp_path)


# Which entries are refused is tests/test_archives.py's business; these check what the cache is
# left with after a refusal.
@pytest.mark.parametrize("name, body, entry", [
    ("/a.tar.gz", tar_gz(corpus_files(), [(tarfile.TarInfo("../evil.txt"), b"pwned")]),
     "../evil.txt"),
    ("/a.zip", zip_bytes(corpus_files(), {"../evil.txt": b"pwned"}), "../evil.txt"),
])
def test_refused_archive_leaves_nothing_in_the_cache(server, tmp_path, name, body, entry):
    cache = tmp_path / "cache"
    server.files[name] = body
    url = server.url(name)
    with pytest.raises(ArchiveError, match="refusing archive entry") as caught:
        ensure_audiomnist(cache, url, progress=False, **TINY)
    assert entry in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert list(audiomnist_dir(cache, url).parent.iterdir()) == []  # nothing extracted, no temp
    assert _no_marker_anywhere(cache)


def test_interrupted_extraction_is_not_taken_as_complete(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files())
    url = server.url("/a.tar.gz")
    target = audiomnist_dir(tmp_path, url)
    # What a crash leaves: a staging folder, and a moved-in copy whose marker was never written.
    leftover = target.parent / f".{target.name}.extracting-x1y2"
    for root in (leftover, target):
        for name, data in corpus_files().items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)

    assert ensure_audiomnist(tmp_path, url, progress=False, **TINY) == target

    assert len(server.requests) == 1
    assert not leftover.exists()
    assert (target / COMPLETE_MARKER).is_file()


def test_metadata_lacking_speakers_names_them(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files(meta_speakers=("01",)))
    url = server.url("/a.tar.gz")
    missing = "describes 1 of 3 speakers; missing speaker ids: 02, 03"
    with pytest.raises(VerificationError, match=missing):
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    assert not audiomnist_dir(tmp_path, url).exists()
    assert _no_marker_anywhere(tmp_path)


def test_wrong_counts_fail_verification(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files())
    with pytest.raises(VerificationError, match="3 speaker folders, expected 60; 12 WAV files"):
        ensure_audiomnist(tmp_path, server.url("/a.tar.gz"), progress=False)


def test_sha256_mismatch_removes_archive(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files())
    url = server.url("/a.tar.gz")
    with pytest.raises(ArchiveError, match="expected 00ff"):
        ensure_audiomnist(tmp_path, url, progress=False, sha256="00ff", **TINY)
    assert list(audiomnist_dir(tmp_path, url).parent.iterdir()) == []


def test_no_network_raises_helpful_download_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/AudioMNIST.tar.gz"
    with pytest.raises(DownloadError) as caught:
        ensure_audiomnist(tmp_path, url, progress=False, **TINY)
    message = str(caught.value)
    assert url in message
    assert "connection refused" in message
    assert "--data-dir" in message and "--cache-dir" in message


def test_http_error_is_named(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_audiomnist(tmp_path, server.url("/missing.tar.gz"), progress=False, **TINY)


def test_non_http_url_points_to_data_dir(tmp_path):
    with pytest.raises(ValueError, match="only http.*pass its folder with --data-dir"):
        ensure_audiomnist(tmp_path, "file:///tmp/AudioMNIST.tar.gz", progress=False, **TINY)


def test_main_prints_error_without_traceback(tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/AudioMNIST.tar.gz"
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
