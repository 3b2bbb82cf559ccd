"""Safe extraction of zip and tar archives downloaded from elsewhere.

Every entry is checked before anything is written: absolute paths, '..' components, links that
lead outside the target or through other links, entries under a symlink, and devices or FIFOs
are refused, and a corrupt archive is reported as such. Standard library only.
"""

from __future__ import annotations

import gzip
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


class ArchiveError(RuntimeError):
    """The archive is corrupt, or holds an entry that would land outside the target."""


def archive_suffix(name: str) -> str | None:
    """The archive suffix `name` ends in.

    Args:
      name: file name or URL path; compared without regard to case.

    Returns:
      One of `ARCHIVE_SUFFIXES` (".tar.gz" rather than ".gz"), or None when it ends in none.
    """
    name = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip (by its `.zip` suffix) or tar archive into `dest` after checking every entry.

    Args:
      archive: the archive file; tar may be uncompressed or gzip, bzip2 or xz compressed.
      dest: existing folder to extract into.

    Raises:
      ArchiveError: the archive is unreadable, or an entry is unsafe.
    """
    archive = Path(archive)
    if archive.name.lower().endswith(".zip"):
        _extract_zip(archive, Path(dest))
    else:
        _extract_tar(archive, Path(dest))


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
