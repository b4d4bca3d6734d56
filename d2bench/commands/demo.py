"""``d2bench demo``: the main job on the embedded default, end to end.

Builds the operators, generates the synthetic DAVIS set on first use, runs every row of both
tables (``studies/smoke.yaml``, else the packaged ``smoke`` study outside a checkout) on the
study's default backend, measures FPS and memory of every
row on one device (``d2bench measure``), writes the report and says where everything is. A
second run finds every cell finished, measures again and rewrites the report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_STUDY = Path("studies/smoke.yaml")
#: What runs when there is no ``studies/smoke.yaml`` here: the same study, shipped in the package.
PACKAGED_STUDY = "smoke"


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from ..cli import UsageError, main
    from ..tracking import resolve_tracking_uri

    if args.study is None:
        args.study = DEFAULT_STUDY if DEFAULT_STUDY.is_file() else _packaged_study()
    if not args.study.is_file():
        raise UsageError(
            f"study {args.study} not found; run `d2bench demo` from the repository root "
            "or pass --study PATH"
        )
    started = time.perf_counter()
    _banner("1/4 building the operators (cached after the first time)")
    if main(["ops", "build"]) != 0:
        return 1
    _banner(f"2/4 running {args.study} (cells already finished are reused)")
    run_args = ["run", str(args.study)]
    if args.backend:
        run_args += ["--backend", args.backend]
    run_status = main(run_args)
    _banner("3/4 measuring FPS and memory of every finished row on one device")
    if main(["measure", str(args.study)]) != 0:
        print("the measurement did not complete: the tables show the cells' in-run figures")
    _banner("4/4 writing the report")
    out = args.out or Path("reports") / args.study.stem
    if main(["report", str(args.study), "--out", str(out)]) != 0:
        return 1
    minutes = (time.perf_counter() - started) / 60
    uri = resolve_tracking_uri()
    print(
        f"\ndemo finished in {minutes:.1f} min"
        + ("" if run_status == 0 else " (some cells failed: see above)")
    )
    print(f"  tables and figures: {out}/README.md (open it, or the PNG/PDF files beside it)")
    print("  browse the runs:    d2bench ui      (MLflow UI on the same store)")
    print(f"                      or: mlflow ui --backend-store-uri {uri}")
    return run_status


def _packaged_study() -> Path:
    from ..cli import UsageError
    from ..study import StudyError, resolve_study_file

    try:
        return resolve_study_file(PACKAGED_STUDY)
    except StudyError as error:
        raise UsageError(str(error)) from None


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="run both tables on synthetic data and write the report (the main job)"
    )
    demo.add_argument("--study", type=Path, default=None,
                      help=f"default {DEFAULT_STUDY}, else the packaged {PACKAGED_STUDY!r} "
                      "study")  # fmt: skip
    demo.add_argument("--backend", choices=["local", "ray", "slurm"], default=None,
                      help="default: the study's backend")  # fmt: skip
    demo.add_argument("--out", type=Path, default=None, help="default reports/<study name>")
    demo.set_defaults(handler=_demo)
