"""`deepdive` command line. Each stage module registers its own subcommands (DESIGN.md, "CLI registration").

Stage CLI modules import their heavy dependencies inside the command functions, so building the parser stays
cheap and `deepdive train` never loads captum, cleanlab, fastapi or plotly.
"""
import argparse
import importlib
import os
import sys

from deepdive import __version__
from deepdive.errors import DeepdiveError

STAGE_CLIS = ("deepdive.train.cli", "deepdive.train.bench", "deepdive.analysis.cli", "deepdive.web.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepdive",
        description="Train an image classifier, dig into its mistakes and browse them locally.",
    )
    parser.add_argument("--version", action="version", version=f"deepdive {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in STAGE_CLIS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepdiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 1
