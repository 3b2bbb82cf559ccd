"""python -m speakergender.predict MODEL PATH [PATH ...]: the gender of the speaker in each file.

Needs only the SavedModel: any model exported by speakergender, from any machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from speakergender import result_rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.predict",
        description=(
            "Classify the speaker's gender in audio files with an exported SavedModel. "
            "Accepts WAV in any PCM or float format, any rate and channel count, and FLAC/OGG "
            "where the soundfile package is installed. Recordings longer than the model's "
            "window are scored window by window; silent files are reported as 'no speech'. "
            "Unreadable files are reported and skipped; the exit status is 1 if any failed."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="SavedModel folder, model folder with numbered versions, "
                                      "or a run name under saved_models/")
    parser.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per file")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    parser.add_argument("--threshold", type=float,
                        help="female when the probability reaches this (default: the model's "
                             "own, 0.5 unless set at export)")
    parser.add_argument("--timeline", action="store_true",
                        help="also print each window's start time and probability")
    parser.add_argument("--batch-size", type=int, default=32, help="files per model call")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported late so --help is instant.
    from speakergender import serving
    try:
        model = serving.load_model(args.model)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files, missing = serving.audio_files(args.paths)
    hop_seconds = model.window_hop_seconds if args.timeline else None

    rows = [result_rows.error_row(path, reason) for path, reason in missing]
    rows += [result_rows.result_row(result, args.threshold, hop_seconds)
             for result in serving.classify_files(model, files, args.batch_size)]

    write_rows(rows, "json" if args.json else "csv" if args.csv else "table", args.timeline)
    failed = [row for row in rows if row["error"]]
    for row in failed:
        print(f"{row['path']}: {row['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(rows)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


def write_rows(rows: list[dict], style: str, timeline: bool) -> None:
    if style == "json":
        for row in rows:
            print(json.dumps(row))
        return
    columns = ["path", "label", "female_probability", "duration_seconds", "windows",
               "windows_disagree", "error"]
    if style == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = [["file", "label", "P(female)", "seconds", "note"]]
    for row in rows:
        if row["error"]:
            table.append([row["path"], "error", "", "", row["error"]])
            continue
        note = "windows disagree" if row["windows_disagree"] else ""
        table.append([row["path"], row["label"], f"{row['female_probability']:.3f}",
                      f"{row['duration_seconds']:.2f}", note])
        if timeline:
            for window in row["timeline"]:
                mark = "" if window["sounding"] else " (silent, not counted)"
                table.append([f"  @{window['start_seconds']:7.2f}s", "",
                              f"{window['female_probability']:.3f}", "", mark.strip()])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
