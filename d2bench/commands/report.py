"""``d2bench report STUDY``: regenerate a study's tables, figures and report page."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .study import STUDY_HELP


def _report(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..report import generate_report
    from ..study import StudyError

    started = time.perf_counter()
    try:
        files = generate_report(args.study, args.out, args.tracking_uri, args.ui_url)
    except StudyError as error:
        raise UsageError(str(error)) from None
    elapsed = time.perf_counter() - started
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(files.run_counts.items()))
    print(f"report written to {files.out_dir}/ in {elapsed:.1f} s")
    print(f"  from {sum(files.run_counts.values())} cell runs ({counts or 'none tracked yet'})")
    print(f"  page:    {files.page}")
    for name, paths in files.tables.items():
        print(f"  {name}:  " + ", ".join(str(path) for path in paths.values()))
    for name, paths in files.figures.items():
        print(f"  figure {name}: " + ", ".join(str(path) for path in paths))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV) and figures of a study's tracked runs"
    )
    report.add_argument("study", type=Path, help=STUDY_HELP)
    report.add_argument(
        "--out", type=Path, default=None, help="output folder (default: reports/<study name>)"
    )
    report.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else the local SQLite store)",
    )
    report.add_argument(
        "--ui-url",
        default=None,
        help="MLflow UI address for run links (default: the tracking URI when it is a server)",
    )
    report.set_defaults(handler=_report)
