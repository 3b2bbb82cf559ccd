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
    """Augmentations that keep gender cues; all off by default. Nothing here shifts pitch."""

    gain_db: float = 0.0            # random gain in [-gain_db, +gain_db]
    noise_snr_db: float | None = None  # add white noise at this SNR
    time_shift_seconds: float = 0.0   # random circular shift up to this much
    time_masks: int = 0               # SpecAugment masks on the features
    time_mask_frames: int = 10
    frequency_masks: int = 0
    frequency_mask_bins: int = 8

    @property
    def enabled(self) -> bool:
        return bool(self.gain_db or self.noise_snr_db is not None or self.time_shift_seconds
                    or self.time_masks or self.frequency_masks)


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
