"""python -m speakergender.metadata MODEL: what an exported model is, from the model alone.

Prints the SavedModel's path, sample rate, window, front end and training configuration in
brief, then its model card (training corpora, held-out figures per corpus and per recording
condition, calibration, limits). `--json` prints the full configuration instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.metadata",
        description="Show what an exported speakergender model is: its configuration and its "
                    "model card, read from the SavedModel's own `metadata` signature.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="SavedModel folder, model folder with numbered versions, "
                                      "or run name under --models-dir")
    parser.add_argument("--models-dir", type=Path, default=Path("saved_models"),
                        help="where run names are looked up")
    parser.add_argument("--json", action="store_true",
                        help="print the full stored configuration as JSON instead")
    return parser


def describe(model) -> str:
    """A few lines on the model, then its card."""
    front_end = model.config.get("front_end", {})
    training = model.config.get("training", {})
    held_out = training.get("holdout_corpus")
    corpora = [c.get("name", "?") for c in model.config.get("data", {}).get("corpora", [])
               if c.get("name") != held_out]
    lines = [f"model:      {model.path}",
             f"kind:       {training.get('model', '?')} on {front_end.get('feature_type', '?')}",
             f"input:      any WAV, resampled to {model.sample_rate} Hz; windows of "
             f"{model.clip_samples} samples",
             f"trained on: {', '.join(corpora) if corpora else 'see the configuration'}"
             + (f" ({held_out} held out for testing)" if held_out else ""), ""]
    card = model.model_card or ("(no model card: this model was exported before model cards "
                                "were written)")
    return "\n".join(lines) + card


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from speakergender import serving
    try:
        model = serving.load_model(args.model, args.models_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(model.config, indent=2, sort_keys=True) if args.json else describe(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
