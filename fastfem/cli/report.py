"""``fastfem report``: the self-contained HTML report of an audit's result store."""

from __future__ import annotations

import argparse

from fastfem.cli.options import positive_int


def cmd_report(args: argparse.Namespace) -> int:
    from fastfem.audit.report.page import write_report

    path = write_report(args.store, out=args.out, top=args.top)
    print(path)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``report`` subcommand's options."""
    r = sub.add_parser("report", help="self-contained HTML report of an audit's result store")
    r.add_argument("store", help="the audit's --out folder")
    r.add_argument("--out", help="HTML file (default: STORE/report.html)")
    r.add_argument("--top", type=positive_int, default=24, help="flagged images in the gallery")
    r.set_defaults(func=cmd_report)
