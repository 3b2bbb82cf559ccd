"""HTTP download against a local server: resume with Range requests, retries, progress, sha256."""

from __future__ import annotations

import hashlib

import pytest

from corpus_archives import corpus_files, tar_gz
from local_http import clear_proxies, closed_port
from speakergender.downloads import ChecksumError, DownloadError, download_file, verify_sha256


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)


def test_dropped_connection_resumes_with_range_request(server, tmp_path):
    body = tar_gz(corpus_files())
    assert len(body) > 4000
    server.files["/a.tar.gz"] = body
    server.drop_after = 1500
    dest = tmp_path / "a.tar.gz"

    download_file(server.url("/a.tar.gz"), dest, progress=False, backoff_seconds=0.01)

    assert dest.read_bytes() == body
    assert not dest.with_name("a.tar.gz.part").exists()
    assert server.requests == [("/a.tar.gz", None), ("/a.tar.gz", "bytes=1500-")]


def test_dropped_connection_gives_up_after_retries_and_keeps_part(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(corpus_files())
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
    body = tar_gz(corpus_files())
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


def test_http_error_names_url_and_status(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        download_file(url, tmp_path / "missing.bin", progress=False)
    assert url in str(caught.value)
    assert caught.value.reason.startswith("HTTP 404")
    assert len(server.requests) == 1  # a 404 is not retried


def test_no_network_fails_at_once_with_reason(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/a.bin"
    with pytest.raises(DownloadError) as caught:
        download_file(url, tmp_path / "a.bin", progress=False, backoff_seconds=60)
    assert caught.value.reason == "connection refused"
    assert url in str(caught.value)


def test_only_http_urls_are_downloaded(tmp_path):
    with pytest.raises(ValueError, match="only http"):
        download_file("ftp://example.org/a.bin", tmp_path / "a.bin", progress=False)


def test_verify_sha256(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    verify_sha256(path, hashlib.sha256(b"abc").hexdigest().upper())
    with pytest.raises(ChecksumError, match="a.bin has sha256 .*, expected 00ff"):
        verify_sha256(path, "00ff")
    assert path.exists()  # removing it is the caller's decision
