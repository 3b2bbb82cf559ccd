"""python -m speakergender.score MODEL --input PATTERN --output PREFIX [BEAM OPTIONS]: on Beam.

Scores every audio file matching a pattern on Apache Beam (the DirectRunner unless
--runner says otherwise) and writes one row per file, as `predict --json` or `--csv` prints
it. Needs the `beam` extra: pip install -e ".[beam]".
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.score",
        description=(
            "Classify the speaker's gender in every audio file matching a pattern, on Apache "
            "Beam, with an exported SavedModel. Files are found and read through Beam's file "
            "systems (local paths; gs://, s3:// and others where Beam's extras for them are "
            "installed). Writes one JSON line (or CSV row) per file with the fields of "
            "'predict --json'; a file that cannot be read is a row with its error. Options "
            "not listed here go to Beam (--runner, --direct_num_workers, --project, ...)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="SavedModel folder, model folder with numbered versions, "
                                      "or a run name under saved_models/; every worker must "
                                      "be able to read it at the same path")
    parser.add_argument("--input", required=True,
                        help="file pattern, e.g. 'recordings/**/*.wav' or 'gs://bucket/audio/*' "
                             "(quote it); files other than audio are skipped")
    parser.add_argument("--output", required=True,
                        help="output prefix: files PREFIX-00000-of-0000N.jsonl (or .csv)")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="JSON lines or CSV with a header in each output file")
    parser.add_argument("--threshold", type=float,
                        help="female when the probability reaches this (default: the model's "
                             "own)")
    parser.add_argument("--timeline", action="store_true",
                        help="JSON rows also carry each window's start time and probability")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="recordings (or blocks of long ones) per model call, at most")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    if args.timeline and args.format == "csv":
        print("error: --timeline needs JSON output", file=sys.stderr)
        return 2
    # Imported late so --help is instant.
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from speakergender import beam_scoring, serving
    try:
        model = serving.load_model(args.model)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    job = beam_scoring.ScoringJob(
        model_path=str(model.path.resolve()), input_pattern=args.input,
        output_prefix=args.output, output_format=args.format, batch_size=args.batch_size,
        threshold=args.threshold,
        window_hop_seconds=model.window_hop_seconds if args.timeline else None)

    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    beam_scoring.add_scoring(pipeline, job, beam_scoring.BlockGrid.of(model))
    result = pipeline.run()
    result.wait_until_finish()
    scored, failed = (beam_scoring.counter_total(result, name)
                      for name in ("files_scored", "files_failed"))
    print(f"{scored + failed} file(s): {scored} scored, {failed} could not be classified; "
          f"rows in {args.output}-*{beam_scoring.OUTPUT_SUFFIXES[args.format]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
