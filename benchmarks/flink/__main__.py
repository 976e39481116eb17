"""`python -m benchmarks.flink OUT/flink.json`: the summary, table and plot again from a saved run (after a change
to the summary or the plot), without measuring anything."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.flink.output import table, write
from benchmarks.flink.summary import direct_streaming_figures, summarize
from plumbing import cli


def main(argv=None) -> None:
    """Summary, table and plot again from a saved flink.json (e.g. after a change to the summary or the plot)."""
    parser = cli.ArgumentParser(prog="python -m benchmarks.flink", description=main.__doc__)
    parser.add_argument("flink_json", help="OUT/flink.json of an earlier run")
    parser.add_argument("--out", help="where flink.json and flink.png go (default: beside the input)")
    args = parser.parse_args(argv)
    path = Path(args.flink_json)
    doc = json.loads(path.read_text())
    out = Path(args.out) if args.out else path.parent
    doc["flink"]["summary"] = summarize(doc["flink"], direct_streaming_figures({}, path.parent)).to_json()
    write(doc["flink"], doc, out)
    print(table(doc["flink"]))


if __name__ == "__main__":
    cli.run(main)
