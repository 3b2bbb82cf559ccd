"""Frozen configuration shared by the pipeline, training, export and prediction.

A model's front end is fully described by one `FrontEndParams`; it is written as JSON beside
every run and every SavedModel, and the exported graph is built from it, so what a model was
trained on is exactly what it is served with.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

FEATURE_TYPES = ("log_mel", "mfcc")
# "mean": each window's features minus their mean over the window's frames, band by band
# (cepstral mean subtraction): a fixed microphone or line colouring is a constant added to every
# frame of a log spectrum, so it cancels. `train` uses it for the scratch CNN by default: it
# generalised better across corpora (benchmarks/generalisation.py). "none" is YAMNet's log-mel.
FEATURE_NORMALIZATIONS = ("none", "mean")


@dataclasses.dataclass(frozen=True)
class FrontEndParams:
    """Waveform -> features. Units live in the names; derived sizes are properties."""

    sample_rate: int = 16000
    # Fixed-length window the model sees; longer recordings are scored window by window.
    # 0.975 s is YAMNet's 15600-sample patch (96 frames), so every model sees the same windows.
    clip_seconds: float = 0.975
    # The shared recordings carry a large constant offset that typical recorders do not.
    remove_dc_offset: bool = True
    pre_emphasis: float = 0.0
    stft_window_seconds: float = 0.025
    stft_hop_seconds: float = 0.010
    fft_length: int = 512
    # 1.0: magnitude spectrogram, 2.0: power spectrogram.
    magnitude_exponent: float = 1.0
    mel_bands: int = 64
    mel_min_hz: float = 125.0
    mel_max_hz: float = 7500.0
    log_offset: float = 0.001
    feature_type: str = "log_mel"
    mfcc_coefficients: int = 12
    mfcc_lifter: int = 22
    feature_normalization: str = "none"
    # Training crops are drawn among the windows within crop_gate_db of a recording's loudest
    # (on the STFT hop grid), so they carry speech. Serving cuts windows every
    # window_hop_seconds and averages all but near-silence: those within serving_gate_db of the
    # loudest and above silence_floor_dbfs. Averaging more windows steadies the score.
    window_hop_seconds: float = 0.48
    crop_gate_db: float = 10.0
    serving_gate_db: float = 30.0
    silence_floor_dbfs: float = -60.0

    def __post_init__(self):
        if self.feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {self.feature_type!r}")
        if not 0 <= self.mel_min_hz < self.mel_max_hz <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= mel_min_hz < mel_max_hz <= sample_rate / 2, got "
                f"{self.mel_min_hz}, {self.mel_max_hz}, {self.sample_rate}")
        if self.feature_normalization not in FEATURE_NORMALIZATIONS:
            raise ValueError(f"feature_normalization must be one of {FEATURE_NORMALIZATIONS}, "
                             f"got {self.feature_normalization!r}")
        if self.fft_length < self.stft_window_samples:
            raise ValueError(
                f"fft_length {self.fft_length} is shorter than the "
                f"{self.stft_window_samples}-sample STFT window")
        if self.feature_type == "mfcc" and not 0 < self.mfcc_coefficients <= self.mel_bands:
            raise ValueError("mfcc_coefficients must be in 1..mel_bands")

    @classmethod
    def yamnet(cls, **overrides: Any) -> "FrontEndParams":
        """YAMNet's log-mel: 25 ms / 10 ms, 512-point FFT, 64 HTK bands 125-7500 Hz, log(x + 0.001)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def seed_mfcc(cls, **overrides: Any) -> "FrontEndParams":
        """The seed project's MFCCs: pre-emphasis 0.97, 25 ms Hann / 10 ms, 40 bands, 12 coefficients, lifter 22."""
        params = dict(pre_emphasis=0.97, mel_bands=40, mel_min_hz=0.0, mel_max_hz=8000.0,
                      magnitude_exponent=2.0, log_offset=1e-10, feature_type="mfcc",
                      mfcc_coefficients=12, mfcc_lifter=22)
        params.update(overrides)
        return cls(**params)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def window_hop_samples(self) -> int:
        return int(round(self.window_hop_seconds * self.sample_rate))

    @property
    def stft_window_samples(self) -> int:
        return int(round(self.stft_window_seconds * self.sample_rate))

    @property
    def stft_hop_samples(self) -> int:
        return int(round(self.stft_hop_seconds * self.sample_rate))

    @property
    def clip_frames(self) -> int:
        """STFT frames in one clip (no end padding, as tf.signal.stft)."""
        return 1 + (self.clip_samples - self.stft_window_samples) // self.stft_hop_samples

    @property
    def feature_bins(self) -> int:
        return self.mfcc_coefficients if self.feature_type == "mfcc" else self.mel_bands

    @property
    def feature_shape(self) -> tuple[int, int]:
        """Shape of one clip's features: (frames, bins)."""
        return (self.clip_frames, self.feature_bins)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Augmentations that keep gender cues. Nothing here shifts pitch or formants.

    The defaults are a recording-conditions recipe: each stage (room, microphone colour, noise,
    gain, soft and hard clipping, telephone line, DC offset) reaches a training window with its
    own probability, with a strength drawn uniformly from a (low, high) range; ranges in Hz are
    drawn log-uniformly. `AugmentParams.none()` turns everything off. The first fields are
    simpler options that, when set, apply to every window.
    """

    NOISE_COLOURS = ("white", "pink", "brown", "speech")
    TELEPHONE_CODECS = ("mu_law", "a_law")

    gain_db: float = 0.0            # random gain in [-gain_db, +gain_db]
    noise_snr_db: float | None = None  # add white noise at this SNR
    time_shift_seconds: float = 0.0   # random circular shift up to this much
    time_masks: int = 0               # SpecAugment masks on the features
    time_mask_frames: int = 10
    frequency_masks: int = 0
    frequency_mask_bins: int = 8
    # Room: exponentially decaying noise after a direct path; output level matched to input.
    room_probability: float = 0.3
    room_rt60_seconds: tuple[float, float] = (0.1, 1.0)
    room_drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant energy ratio
    # Microphone colour: a zero-phase magnitude response, 0 dB at 1 kHz before the EQ.
    colour_probability: float = 0.4
    colour_tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    colour_eq_bands: int = 2          # peaking bands per window
    colour_eq_gain_db: tuple[float, float] = (-8.0, 8.0)
    colour_eq_hz: tuple[float, float] = (150.0, 6000.0)
    colour_eq_q: tuple[float, float] = (0.7, 3.0)
    colour_shelf_gain_db: tuple[float, float] = (-6.0, 6.0)  # one low and one high shelf
    colour_low_shelf_hz: tuple[float, float] = (100.0, 400.0)
    colour_high_shelf_hz: tuple[float, float] = (2000.0, 6000.0)
    colour_high_pass_hz: tuple[float, float] = (50.0, 300.0)    # 2nd-order Butterworth
    colour_low_pass_hz: tuple[float, float] = (3400.0, 8000.0)  # 4th-order Butterworth
    # Noise: one colour per window, at an SNR against the window's mean power.
    noise_probability: float = 0.4
    noise_snr_range_db: tuple[float, float] = (5.0, 40.0)
    noise_colours: tuple[str, ...] = NOISE_COLOURS
    # Level, in this order: gain, tanh saturation, hard clipping.
    level_gain_probability: float = 0.5
    level_gain_db: tuple[float, float] = (-12.0, 6.0)
    soft_clip_probability: float = 0.2
    soft_clip_drive_db: tuple[float, float] = (0.0, 20.0)  # window peak over tanh's knee
    hard_clip_probability: float = 0.2
    hard_clip_level_db: tuple[float, float] = (-12.0, -1.0)  # threshold under the window peak
    # Telephone line: 300-3,400 Hz at 8 kHz, 8-bit companding (codec drawn per window).
    telephone_probability: float = 0.2
    telephone_codecs: tuple[str, ...] = TELEPHONE_CODECS
    # Recorder DC offset, in full-scale units, added last.
    dc_offset_probability: float = 0.2
    dc_offset_full_scale: tuple[float, float] = (-0.02, 0.02)

    def __post_init__(self):
        # JSON turns tuples into lists; take them back so equal configs compare and hash equal.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        for name in ("gain_db", "time_shift_seconds", "time_masks", "time_mask_frames",
                     "frequency_masks", "frequency_mask_bins", "colour_eq_bands"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {value}")
            if field.type.startswith("tuple[float"):
                if len(value) != 2 or not value[0] <= value[1]:
                    raise ValueError(f"{field.name} must be a (low, high) pair with low <= high, "
                                     f"got {value}")
        positive = ("room_rt60_seconds", "colour_eq_hz", "colour_eq_q", "colour_low_shelf_hz",
                    "colour_high_shelf_hz", "colour_high_pass_hz", "colour_low_pass_hz")
        for name in positive:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.colour_high_pass_hz[1] >= self.colour_low_pass_hz[0]:
            raise ValueError(f"colour_high_pass_hz {self.colour_high_pass_hz} must lie below "
                             f"colour_low_pass_hz {self.colour_low_pass_hz}")
        if self.hard_clip_level_db[1] > 0.0:
            raise ValueError("hard_clip_level_db must be <= 0 (under the window peak), got "
                             f"{self.hard_clip_level_db}")
        for name, allowed in (("noise_colours", self.NOISE_COLOURS),
                              ("telephone_codecs", self.TELEPHONE_CODECS)):
            chosen = getattr(self, name)
            if not chosen or not set(chosen) <= set(allowed):
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {chosen}")

    @classmethod
    def none(cls) -> "AugmentParams":
        """No augmentation at all."""
        return cls(**{field.name: 0.0 for field in dataclasses.fields(cls)
                      if field.name.endswith("probability")})

    @property
    def enabled(self) -> bool:
        return bool(self.gain_db or self.noise_snr_db is not None or self.time_shift_seconds
                    or self.time_masks or self.frequency_masks
                    or any(getattr(self, field.name) for field in dataclasses.fields(self)
                           if field.name.endswith("probability")))


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """How one model is trained. Together with FrontEndParams it fixes a run."""

    model: str = "scratch"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    folds: int = 0                    # 0: one hold-out split; K >= 2: K-fold cross-validation
    test_fraction: float = 0.2        # hold-out share of speakers when folds == 0
    validation_fraction: float = 0.2  # share of training speakers kept for early stopping
    # Train on every other corpus and test on all of this one (instead of folds or a hold-out).
    holdout_corpus: str | None = None
    early_stopping_patience: int = 6
    class_balance: str = "weights"    # "weights" or "none"
    deterministic: bool = False
    augment: AugmentParams = AugmentParams()
    # Pretrained backbones only.
    backbone_handle: str | None = None
    backbone_layer: str | None = None  # the layer the head reads; None: the backbone's default
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-4
    fine_tune_blocks: int = 4


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_json(path: str | Path, **configs: Any) -> None:
    """Write configs (dataclasses or plain dicts) as one JSON object keyed by name."""
    payload = {name: to_dict(c) if dataclasses.is_dataclass(c) else c for name, c in configs.items()}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
