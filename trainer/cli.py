"""The ``camp`` command line: a thin layer that turns options into job configs.

Options of the job commands are generated from the config dataclasses in :mod:`trainer.config`
(field name -> ``--field-name``, metadata help -> help text), so the CLI, the Processing
algorithms and the ArcGIS tools cannot drift apart. Nothing heavy is imported until a job runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .config import JOB_CONFIGS, coerce
from .errors import CampError

EXAMPLES = """\
examples:
  camp fetch --bbox 32.5937,0.3502,32.5957,0.3516 --zoom 21 \\
      --imagery 'https://tiles.example.org/{z}/{x}/{y}.png' --labels overpass --out data/kampala
  camp train --data data/kampala --out runs/kampala --epochs 30
  camp detect --model runs/kampala --imagery orthophoto.tif --out detections/
  camp run --bbox 32.5937,0.3502,32.5957,0.3516 --zoom 21 --imagery file:///data/tiles/{z}/{x}/{y}.png \\
      --labels buildings.geojson --out projects/kampala
"""

COMMAND_HELP = {
    "fetch": "fetch image chips and label masks for an extent",
    "train": "train a U-Net on a dataset and export every model format",
    "run": "fetch -> train -> export -> detect -> evaluate on one extent (the main job)",
    "detect": "run a model over a raster or an XYZ extent; write probability, mask and footprints",
    "evaluate": "compare a detection with reference polygons (IoU, F1, object counts)",
    "package": "(re)write model artifacts (pth, pt, onnx, dlpk, stac) from a run folder",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    hints = typing.get_type_hints(config_cls)
    required = parser.add_argument_group("required")
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        text = f.metadata.get("help", "")
        is_required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        group = required if is_required else parser
        if hint is bool:
            group.add_argument(_flag(f.name), action="store_true", help=text)
            continue
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        default = None if is_required else f.default
        if default is not None and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            text = f"{text} (default: {shown})"
        group.add_argument(_flag(f.name), dest=f.name, required=is_required, choices=choices,
                           metavar=None if choices else f.name.upper(), help=text)


def _config_from_args(config_cls: type, args: argparse.Namespace) -> Any:
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        value = getattr(args, f.name)
        if value is None or (hints[f.name] is bool and value is False):
            continue
        values[f.name] = coerce(value, hints[f.name], _flag(f.name))
    return config_cls(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camp", description="Map refugee camps with deep learning: fetch, train, export, detect.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"camp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for kind, help_text in COMMAND_HELP.items():
        p = sub.add_parser(kind, help=help_text, description=(JOB_CONFIGS[kind].__doc__ or help_text).strip())
        _add_config_options(p, JOB_CONFIGS[kind])
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("validate-stac", help="validate a STAC item (STAC core + MLM and its extensions)")
    p.add_argument("item", type=Path, help="path to a STAC item JSON")
    p.add_argument("--schema-dir", type=Path, default=None,
                   help="folder of extension schemas with index.json (default: fetch by URL and cache)")
    p = sub.add_parser("env", help="report Python, torch, CUDA/GPU and missing packages, with the fix")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p = sub.add_parser("job", help="(for front ends) run a job given as JSON on stdin, with JSON-lines events")
    p.add_argument("kind", choices=list(JOB_CONFIGS))
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--bbox -1.5,2,3,4`` work: argparse would take the value for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in ("--bbox", "--bands") and token.startswith("-") and "," in token:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        if args.command == "job":
            return _run_json_job(args.kind)
        if args.command == "validate-stac":
            from .export.stac import validate_stac_cli

            return validate_stac_cli(args.item, args.schema_dir)
        if args.command == "env":
            from .environment import check_environment

            report = check_environment()
            print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
            return 0 if report.ok else 1
        return _run_cli_job(args)
    except CampError as exc:
        print(f"camp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"camp {args.command}: interrupted; completed outputs were kept, run again to resume",
              file=sys.stderr)
        return 130


def _run_cli_job(args: argparse.Namespace) -> int:
    from .jobs import run_job
    from .progress import TqdmProgress

    config = _config_from_args(JOB_CONFIGS[args.command], args)
    progress = TqdmProgress(args.command)
    try:
        result = run_job(args.command, config, progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.summary() if hasattr(result, "summary") else json.dumps(result.to_dict(), indent=2, default=str))
    return 0


def _run_json_job(kind: str) -> int:
    """``camp job KIND``: config JSON on stdin, JSON-lines events on stdout (see trainer.runner)."""
    from .jobs import run_job
    from .progress import JsonLinesProgress

    events = JsonLinesProgress(sys.stdout)

    def on_signal(signum: int, frame: Any) -> None:
        events.cancel()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    try:
        config = json.loads(sys.stdin.read() or "{}")
        result = run_job(kind, config, events)
    except CampError as exc:
        events.emit("error", type=type(exc).__name__, message=str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        events.emit("error", type="Cancelled", message="cancelled; completed outputs were kept")
        return 130
    except Exception as exc:  # noqa: BLE001 - report anything to the front end, with its type
        events.emit("error", type=type(exc).__name__, message=f"{type(exc).__name__}: {exc}")
        raise
    events.emit("result", result=result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
