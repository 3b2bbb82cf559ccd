"""Training stages: the part of a model's recipe that says how it learns, phase by phase."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of training: which layers learn, at what rate, for how many epochs."""

    name: str
    epochs: int
    learning_rate: float
    set_trainable: Callable[[keras.Model], None] = lambda model: None
