"""Long recordings in blocks: read, decoded and scored a piece at a time, in bounded memory.

A recording of an hour at 48 kHz is 173 M samples; decoded, resampled and framed whole it
takes gigabytes. Instead it is cut into blocks of whole windows that the model scores one at a
time (`classify_wav` on each block's WAV bytes), and the windows each block owns are joined and
summarised once (`summarize_windows`), giving what scoring it whole gives:

- every window loses its own DC offset and is scored alone, so a window depends on its samples
  only;
- blocks start on the window grid (window starts are `hop` apart from the recording's first
  sample) at a source sample that is also an output instant of the resampler, so a block's
  windows lie where the whole recording's do;
- each block reaches past the windows it owns by a margin of whole windows, more than the
  resampler's filter reaches (`resample.reach_seconds`), so its owned windows see the samples
  the whole recording's do; the first and last blocks end where the recording does.

Only WAV files are cut; other formats, and recordings of a few blocks or less, are scored whole.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from speakergender.frontend.resample import reach_seconds
from speakergender.wav_layout import WavLayout, read_wav_layout

# Long enough that margins cost little (a window of margin each side, and a window's overhang:
# ~10% at 15 s), short enough that one block's decoding, resampling and framing at 48 kHz stay
# within a hundred megabytes.
BLOCK_SECONDS = 15.0
# How the decoder's errors point at a sample (`frontend.wav`).
_FRAME_NUMBER = re.compile(r"(at frame )(\d+)")


@dataclasses.dataclass(frozen=True)
class Block:
    """A stretch of a long WAV file, and which of its windows are its own.

    Windows are counted on the recording's grid: window i starts at i x hop samples (at the
    model's rate). The block's WAV starts at window `first_window - skip_windows`, so its own
    window j is the recording's window `first_window - skip_windows + j`.
    """

    path: str
    index: int
    layout: WavLayout
    first_frame: int          # source frames the block's WAV holds
    frames: int
    first_window: int         # the recording's windows this block owns
    windows: int
    skip_windows: int         # the block's leading windows owned by the block before
    recording_samples: int    # the whole recording's length at the model's rate

    def read(self) -> bytes:
        """The block as a WAV file in the recording's own format."""
        with open(self.path, "rb") as stream:
            return self.layout.wav_bytes(self.first_frame, self.frames, stream)

    def recording_error(self, error: str) -> str:
        """The decoder's error for this block, with frame numbers counted from the start of
        the recording, as decoding it whole would report them."""
        return _FRAME_NUMBER.sub(lambda m: f"{m[1]}{int(m[2]) + self.first_frame}", error)

    def owned(self, values: np.ndarray) -> np.ndarray:
        """This block's own windows out of per-window outputs of its WAV (one row)."""
        return values[self.skip_windows:self.skip_windows + self.windows]


def plan_blocks(path: str | Path, sample_rate: int, clip_samples: int, hop_samples: int,
                block_seconds: float = BLOCK_SECONDS) -> list[Block]:
    """The blocks to score a recording in, or [] where it is best scored whole (not a WAV file
    the decoder reads, or no longer than a few blocks).

    Args:
      path: an audio file.
      sample_rate, clip_samples, hop_samples: the model's rate, window and window hop.
      block_seconds: about how much of the recording each block owns.
    """
    path = str(path)
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            layout = read_wav_layout(stream, stream.tell())
    except OSError:
        return []  # reading it whole reports the error
    if layout is None or layout.seconds < 3 * block_seconds:
        return []
    rate = layout.sample_rate
    samples = -(-layout.frames * sample_rate // rate)  # as the resampler makes them
    windows = 1 + max(samples - clip_samples + hop_samples // 2, 0) // hop_samples
    # Blocks start every `step` windows: a whole number of source frames.
    step = sample_rate // math.gcd(hop_samples * rate, sample_rate)
    margin = step * math.ceil(reach_seconds(rate, sample_rate) * sample_rate / (step * hop_samples))
    owned = step * max(1, round(block_seconds * sample_rate / hop_samples / step))
    count = -(-windows // owned)
    if count < 2:
        return []
    blocks = []
    for index in range(count):
        first_window = index * owned
        start_window = max(first_window - margin, 0)
        end_sample = (first_window + owned - 1) * hop_samples + clip_samples + margin * hop_samples
        first_frame = start_window * hop_samples * rate // sample_rate
        last_frame = (layout.frames if index == count - 1
                      else min(-(-end_sample * rate // sample_rate) + 1, layout.frames))
        blocks.append(Block(
            path=path, index=index, layout=layout, first_frame=first_frame,
            frames=last_frame - first_frame, first_window=first_window,
            windows=min(owned, windows - first_window), skip_windows=first_window - start_window,
            recording_samples=samples))
    return blocks


def join_windows(scored: list[tuple[Block, dict]]) -> tuple[str, dict[str, np.ndarray]]:
    """A recording's windows from its blocks' `classify_wav` rows (numpy, one row each).

    Returns:
      ("", the `summarize_windows` inputs as numpy arrays of one row), or, where a block failed,
      (its error as decoding the whole recording reports it, {}).
    """
    scored = sorted(scored, key=lambda item: item[0].index)
    for block, row in scored:
        if row["error"]:
            return block.recording_error(row["error"].decode()), {}
    logits = np.concatenate([block.owned(row["window_logits"]) for block, row in scored])
    levels = np.concatenate([block.owned(row["window_level_db"]) for block, row in scored])
    return "", {"window_logits": logits[np.newaxis], "window_level_db": levels[np.newaxis],
                "window_count": np.array([len(logits)], np.int32)}
