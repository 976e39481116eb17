"""Write (or check) the published JSON Schema of each model's events: `schemas/<name>_event.schema.json`.

    python -m training.schemas            # (re)write the files from model_handlers.interface
    python -m training.schemas --check    # exit 1 if a committed file differs from the interface

The interface in `model_handlers/interface.py` is the source of truth; these files are its rendering.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model_handlers import interface as mi
from plumbing import cli

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_path(model: mi.ModelInterface, schema_dir: Path = SCHEMA_DIR) -> Path:
    return Path(schema_dir) / f"{model.name}_event.schema.json"


def render(model: mi.ModelInterface) -> str:
    return json.dumps(model.json_schema(), indent=2, sort_keys=False) + "\n"


def write(schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    Path(schema_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for model in mi.MODELS.values():
        path = schema_path(model, schema_dir)
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def check(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Problems found (empty when every committed schema matches the interface)."""
    problems = []
    for model in mi.MODELS.values():
        path = schema_path(model, schema_dir)
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != render(model):
            problems.append(f"{path} differs from model_handlers/interface.py ({model.name})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    parser.add_argument("--schema_dir", default=str(SCHEMA_DIR))
    args = parser.parse_args(argv)
    if args.check:
        problems = check(Path(args.schema_dir))
        for problem in problems:
            print(f"schema out of date: {problem}", file=sys.stderr)
        if problems:
            print("run `python -m training.schemas` to regenerate them, and commit the result", file=sys.stderr)
            return 1
        print(f"schemas in {args.schema_dir} match model_handlers/interface.py")
        return 0
    for path in write(Path(args.schema_dir)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
