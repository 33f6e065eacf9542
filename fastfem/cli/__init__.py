"""The ``fastfem`` command line: ``explain``, ``audit``, ``report``, ``evaluate``, ``convert``."""

from __future__ import annotations

import argparse
import os
import sys

from fastfem.cli import audit, convert, evaluate, explain, report


def build_parser() -> argparse.ArgumentParser:
    """The ``fastfem`` parser: one subcommand per module of this package."""
    parser = argparse.ArgumentParser(prog="fastfem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in (explain, audit, report, evaluate, convert):
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line. As an application (not a library), it picks Keras's JAX backend for
    its own process unless ``KERAS_BACKEND`` says otherwise: Keras models then run natively, the
    fastest path. Keras reads the variable at its first import, which no module imported by
    ``fastfem.cli`` does."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, TypeError) as err:
        one_line = " ".join(str(err).split())  # a message quoting a library's lines
        print(f"fastfem {args.command}: error: {one_line}", file=sys.stderr)
        return 2
