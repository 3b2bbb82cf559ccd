"""Test helpers that pack a tiny AudioMNIST-shaped corpus into tar.gz or zip bytes."""

from __future__ import annotations

import io
import json
import random
import tarfile
import wave
import zipfile

from speakergender.audiomnist import METADATA_NAME

SPEAKERS = ("01", "02", "03")
DIGITS = 2
REPETITIONS = 2
CLIPS = len(SPEAKERS) * DIGITS * REPETITIONS
TOP = "AudioMNIST-0123abcd"


def _wav_bytes(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        # Noise keeps the archive from compressing to almost nothing, so a drop lands mid-body.
        wav.writeframes(rng.randbytes(800))
    return buffer.getvalue()


def corpus_files(meta_speakers: tuple[str, ...] = SPEAKERS) -> dict[str, bytes]:
    """AudioMNIST's layout, relative to the copy's root: data/NN/D_NN_R.wav and the metadata."""
    rng = random.Random(0)
    files = {f"data/{speaker}/{digit}_{speaker}_{rep}.wav": _wav_bytes(rng)
             for speaker in SPEAKERS for digit in range(DIGITS) for rep in range(REPETITIONS)}
    meta = {speaker: {"gender": "female" if int(speaker) % 2 else "male", "age": "25"}
            for speaker in meta_speakers}
    files[f"data/{METADATA_NAME}"] = json.dumps(meta, indent=4).encode()
    return files


def tar_gz(files: dict[str, bytes], extra: list[tuple[tarfile.TarInfo, bytes]] = ()) -> bytes:
    """`files` under `TOP/`, then the `extra` entries as they are, gzip-compressed."""
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


def zip_bytes(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """`files` under `TOP/`, then the `extra` entries by their own names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(f"{TOP}/{name}", data)
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    """A tar symlink (or, with `kind=tarfile.LNKTYPE`, hard link) entry for `tar_gz`'s `extra`."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""
