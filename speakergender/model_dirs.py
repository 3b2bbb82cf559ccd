"""Where exported models live: TF Serving's numbered version folders (`NAME/1/`, `NAME/2/`).

Plain file logic, shared by the export (which writes versions) and the serving side (which
finds the newest), so neither imports the other.
"""

from __future__ import annotations

import re
from pathlib import Path


def next_version_dir(model_dir: str | Path) -> Path:
    """`model_dir/N`, N one more than the highest numbered version already there."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.glob("*") if re.fullmatch(r"\d+", p.name)]
    return model_dir / str(max(versions, default=0) + 1)


def latest_version_dir(model_dir: str | Path) -> Path:
    """The highest numbered complete version in `model_dir`, or `model_dir` itself if it
    already is a SavedModel folder."""
    model_dir = Path(model_dir)
    if (model_dir / "saved_model.pb").is_file():
        return model_dir
    versions = sorted((int(p.name) for p in model_dir.glob("*")
                       if re.fullmatch(r"\d+", p.name) and (p / "saved_model.pb").is_file()))
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no SavedModel here (no saved_model.pb, no "
                                "numbered version folders)")
    return model_dir / str(versions[-1])
