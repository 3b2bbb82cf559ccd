"""Test helpers that write WAV files: well-formed ones through soundfile, odd ones byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The 14 bytes of KSDATAFORMAT_SUBTYPE_* GUIDs that follow the 2-byte format tag.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def write_wav(path: str | Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16",
              format: str = "WAV") -> Path:
    """Writes samples ([<# samples>] or [<# samples>, <# channels>]) with soundfile.

    `format="WAVEX"` writes WAVE_FORMAT_EXTENSIBLE.
    """
    sf.write(str(path), samples, rate, subtype=subtype, format=format)
    return Path(path)


def chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: id, little-endian size, payload and a pad byte when the size is odd."""
    assert len(chunk_id) == 4
    padding = b"\0" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload)) + payload + padding


def fmt_payload(tag: int = WAVE_FORMAT_PCM, channels: int = 1, rate: int = 16000,
                bits: int = 16, extensible_tag: int | None = None) -> bytes:
    """A 'fmt ' chunk payload; with `extensible_tag`, a 40-byte WAVE_FORMAT_EXTENSIBLE one."""
    block_align = channels * bits // 8
    payload = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    if extensible_tag is not None:
        payload += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_tag) + _GUID_TAIL
    return payload


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """Interleaved little-endian int16 bytes of float samples in [-1, 1)."""
    return np.round(np.asarray(samples) * 32768).astype("<i2").tobytes()


def riff(*chunks: bytes, riff_size: int | None = None, form: bytes = b"WAVE",
         magic: bytes = b"RIFF") -> bytes:
    """A RIFF file of the given (already built) chunks; the size field is computed unless given."""
    body = b"".join(chunks)
    size = 4 + len(body) if riff_size is None else riff_size
    return magic + struct.pack("<I", size) + form + body


def pcm16_wav(samples: np.ndarray, rate: int = 16000, channels: int = 1,
              before_fmt: tuple[bytes, ...] = (), between: tuple[bytes, ...] = (),
              after_data: tuple[bytes, ...] = (), data_first: bool = False) -> bytes:
    """A 16-bit PCM file with extra (already built) chunks around 'fmt ' and 'data'."""
    fmt = chunk(b"fmt ", fmt_payload(channels=channels, rate=rate))
    data = chunk(b"data", pcm16_bytes(samples))
    if data_first:
        fmt, data = data, fmt
    return riff(*before_fmt, fmt, *between, data, *after_data)


def parse_chunks(contents: bytes) -> list[list]:
    """A well-formed file's chunks as [id, declared size or None, payload, padded]."""
    chunks, pos = [], 12
    while pos + 8 <= len(contents):
        chunk_id, size = contents[pos:pos + 4], struct.unpack("<I", contents[pos + 4:pos + 8])[0]
        chunks.append([chunk_id, None, contents[pos + 8:pos + 8 + size], True])
        pos += 8 + size + (size & 1)
    return chunks
