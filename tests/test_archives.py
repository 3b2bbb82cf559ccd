"""Safe extraction: path traversal, links leading out, corrupt archives."""

from __future__ import annotations

import stat
import tarfile
import zipfile

import pytest

from corpus_archives import TOP, corpus_files, link, tar_gz, zip_bytes
from speakergender.archives import ArchiveError, archive_suffix, extract_archive


def _write(tmp_path, name: str, body: bytes):
    """The archive at `tmp_path/name` and an empty `tmp_path/dest` to extract it into."""
    archive = tmp_path / name
    archive.write_bytes(body)
    dest = tmp_path / "dest"
    dest.mkdir()
    return archive, dest


@pytest.mark.parametrize("extra, entry", [
    (lambda root: [(tarfile.TarInfo(str(root / "evil.txt")), b"pwned")], "evil.txt"),
    (lambda root: [(tarfile.TarInfo("../evil.txt"), b"pwned")], "../evil.txt"),
    (lambda root: [(tarfile.TarInfo(f"{TOP}/data/../../../evil.txt"), b"pwned")], "evil.txt"),
    (lambda root: [link(f"{TOP}/escape", "../../.."),
                   (tarfile.TarInfo(f"{TOP}/escape/evil.txt"), b"pwned")], f"{TOP}/escape"),
    (lambda root: [link(f"{TOP}/abs", str(root))], f"{TOP}/abs"),
    (lambda root: [link(f"{TOP}/here", "."), link(f"{TOP}/here/up", "..")], f"{TOP}/here/up"),
    (lambda root: [link(f"{TOP}/hard", "../../etc/passwd", tarfile.LNKTYPE)], f"{TOP}/hard"),
], ids=["absolute", "dotdot", "dotdot-inside", "symlink-out", "symlink-absolute",
        "through-symlink", "hardlink-out"])
def test_malicious_tar_is_refused_before_extracting(tmp_path, extra, entry):
    archive, dest = _write(tmp_path, "a.tar.gz", tar_gz(corpus_files(), extra(tmp_path)))
    with pytest.raises(ArchiveError, match="refusing archive entry") as caught:
        extract_archive(archive, dest)
    assert entry in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "dest"]
    assert list(dest.iterdir()) == []  # nothing extracted


def test_symlink_inside_the_copy_is_allowed(tmp_path):
    archive, dest = _write(tmp_path, "a.tar.gz",
                           tar_gz(corpus_files(), [link(f"{TOP}/speakers", "data")]))
    extract_archive(archive, dest)
    assert (dest / TOP / "speakers" / "01").is_dir()


def test_malicious_zip_is_refused(tmp_path):
    archive, dest = _write(tmp_path, "a.zip", zip_bytes(corpus_files(), {"../evil.txt": b"pwned"}))
    with pytest.raises(ArchiveError, match="refusing archive entry '../evil.txt'"):
        extract_archive(archive, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "dest"]
    assert list(dest.iterdir()) == []


def test_zip_symlink_leading_out_is_refused(tmp_path):
    buffer = tmp_path / "a.zip"
    with zipfile.ZipFile(buffer, "w") as zipped:
        info = zipfile.ZipInfo(f"{TOP}/escape")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(info, "../../..")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="points outside the target"):
        extract_archive(buffer, dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name, body, kind", [
    ("a.tar.gz", b"this is not an archive at all\n" * 50, "tar"),
    ("a.tar.gz", tar_gz(corpus_files())[:3000], "tar"),  # truncated gzip stream
    ("a.zip", b"PK\x03\x04 not really a zip" * 40, "zip"),
])
def test_corrupt_archive_is_reported(tmp_path, name, body, kind):
    archive, dest = _write(tmp_path, name, body)
    with pytest.raises(ArchiveError, match=f"{name} is not a readable {kind} archive"):
        extract_archive(archive, dest)
    assert archive.exists()  # removing it is the caller's decision


@pytest.mark.parametrize("name, suffix", [
    ("/x/AudioMNIST.tar.gz", ".tar.gz"), ("A.TGZ", ".tgz"), ("a.tar.bz2", ".tar.bz2"),
    ("a.tar.xz", ".tar.xz"), ("a.tar", ".tar"), ("a.zip", ".zip"), ("a.rar", None),
])
def test_archive_suffix(name, suffix):
    assert archive_suffix(name) == suffix
