"""Where a WAV file keeps its samples, read from its header alone (no decoding, no TensorFlow).

Clients use it before any bytes reach a model: the server to refuse recordings longer than its
limit, `streaming` to cut a long recording into blocks it can read one at a time. The walk over
the RIFF chunks follows the model's own decoder (`frontend.wav`), so a file it describes is one
the decoder reads the same way; where the decoder would reject a file before decoding any
samples, there is no layout, and the model reports what is wrong.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import BinaryIO

from speakergender.frontend import wav as wav_limits


@dataclasses.dataclass(frozen=True)
class WavLayout:
    fmt_chunk: bytes        # the fmt chunk's body, as the file has it
    data_offset: int        # file position of the first sample
    data_bytes: int         # bytes of samples (whole frames)
    channels: int
    sample_rate: int
    frame_bytes: int        # bytes per frame: one sample of every channel

    @property
    def frames(self) -> int:
        return self.data_bytes // self.frame_bytes

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def wav_bytes(self, first_frame: int, frames: int, stream: BinaryIO) -> bytes:
        """A WAV file of frames [first_frame, first_frame + frames) of the recording, in its
        own format, read from `stream` (the file this layout describes)."""
        stream.seek(self.data_offset + first_frame * self.frame_bytes)
        samples = stream.read(frames * self.frame_bytes)
        return self.header(len(samples)) + samples

    def header(self, data_bytes: int) -> bytes:
        """The bytes before the samples of a WAV file in this recording's format holding
        `data_bytes` bytes of samples."""
        fmt = self.fmt_chunk + b"\0" * (len(self.fmt_chunk) & 1)
        riff_size = 4 + 8 + len(fmt) + 8 + data_bytes
        return b"".join([b"RIFF", struct.pack("<I", riff_size), b"WAVE",
                         b"fmt ", struct.pack("<I", len(self.fmt_chunk)), fmt,
                         b"data", struct.pack("<I", data_bytes)])


def read_wav_layout(stream: BinaryIO, size: int) -> WavLayout | None:
    """The layout of the WAV file in `stream` (`size` bytes), or None where the model's decoder
    would reject it before decoding a sample (not RIFF/WAVE, no fmt or data chunk, a data chunk
    longer than the file, a rate, channel count or frame size the decoder refuses)."""
    stream.seek(0)
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, fmt_chunk, data_chunk = 12, None, None
    for _ in range(wav_limits.MAX_CHUNKS):
        if position + 8 > size or (fmt_chunk and data_chunk):
            break
        stream.seek(position)
        chunk_id, chunk_size = struct.unpack("<4sI", stream.read(8))
        if chunk_id == b"fmt " and fmt_chunk is None:
            fmt_chunk = stream.read(min(chunk_size, 256))
        elif chunk_id == b"data" and data_chunk is None:
            data_chunk = (position + 8, chunk_size)
        if position + 8 + chunk_size > size:
            break
        position += 8 + chunk_size + (chunk_size & 1)
    if not fmt_chunk or not data_chunk or len(fmt_chunk) < 16:
        return None
    _, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    data_offset, data_bytes = data_chunk
    frame_bytes = channels * (bits // 8)
    if (data_bytes > size - data_offset or not 0 < channels <= wav_limits.MAX_CHANNELS
            or not wav_limits.MIN_SAMPLE_RATE <= rate <= wav_limits.MAX_SAMPLE_RATE
            or frame_bytes == 0):
        return None
    return WavLayout(fmt_chunk=fmt_chunk, data_offset=data_offset,
                     data_bytes=data_bytes - data_bytes % frame_bytes, channels=channels,
                     sample_rate=rate, frame_bytes=frame_bytes)


def layout_of_bytes(data: bytes) -> WavLayout | None:
    """`read_wav_layout` of a whole file held in memory."""
    return read_wav_layout(io.BytesIO(data), len(data))
