"""``reports/<study>/README.md``: the tables, the figures, the runs, the spec and the environment
on one page that renders on GitHub and in any Markdown viewer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.contract import FPS, JF_MEAN
from .render import to_markdown
from .table import Table


@dataclass(frozen=True)
class FigureEntry:
    """One figure on the page: its files (relative to the page) and what it shows."""

    title: str
    png: str
    pdf: str
    description: str


def run_url(run_id: str, ui_url: str | None, experiment_id: str | None) -> str | None:
    """The MLflow UI address of a run, or None when no UI address is known."""
    if not ui_url or experiment_id is None:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def portable(text: str) -> str:
    """``text`` without this machine's working directory or home (the page gets committed)."""
    cwd, home = str(Path.cwd()), str(Path.home())
    text = text.replace(cwd + "/", "").replace(cwd, ".")
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def describe_store(uri: str) -> str:
    """The tracking store as a reader should see it (a SQLite file by its relative path)."""
    if uri.startswith("sqlite:///"):
        return f"SQLite `{portable(uri[len('sqlite:///') :])}`"
    return f"`{portable(uri)}`"


def _md_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return portable(str(value)).replace("|", "\\|").replace("\n", " ")


def _runs_section(runs: pd.DataFrame, ui_url: str | None, experiment_id: str | None) -> list[str]:
    if runs.empty:
        return ["No runs of this study are tracked yet.", ""]
    lines = [
        "| Row | Seed | Status | J&F (%) | FPS (in-run, diagnostic) | Run |",
        "|---|--:|---|--:|--:|---|",
    ]
    ordered = runs.sort_values(["row", "seed"], kind="stable") if "row" in runs else runs
    for _, run in ordered.iterrows():
        jf = run.get(JF_MEAN)
        fps = run.get(FPS)
        url = run_url(str(run["run_id"]), ui_url, experiment_id)
        link = f"[`{run['run_id']}`]({url})" if url else f"`{run['run_id']}`"
        lines.append(
            "| "
            + " | ".join(
                [
                    _md_cell(run.get("row")),
                    _md_cell(run.get("seed")),
                    _md_cell(run.get("status")),
                    _md_cell(None if pd.isna(jf) else f"{100 * float(jf):.1f}"),
                    _md_cell(None if pd.isna(fps) else f"{float(fps):.2f}"),
                    link,
                ]
            )
            + " |"
        )
    lines.append("")
    if not url_known(ui_url, experiment_id):
        lines += [
            "Run ids are given without links (no MLflow UI address is known): start the UI "
            "with `d2bench ui` and open the study's experiment, or pass `--ui-url` to "
            "`d2bench report`.",
            "",
        ]
    return lines


def url_known(ui_url: str | None, experiment_id: str | None) -> bool:
    return bool(ui_url) and experiment_id is not None


def _environment_section(environment: Mapping[str, Any]) -> list[str]:
    if not environment:
        return ["Not recorded.", ""]
    lines = ["| Key | Value |", "|---|---|"]
    for key, value in environment.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        lines.append(f"| {_md_cell(key)} | {_md_cell(shown)} |")
    return [*lines, ""]


def render_page(
    study_name: str,
    tables: Sequence[tuple[Table, Mapping[str, str]]],
    figures: Sequence[FigureEntry],
    runs: pd.DataFrame,
    spec_text: str,
    environment: Mapping[str, Any],
    tracking_uri: str,
    ui_url: str | None = None,
    experiment_id: str | None = None,
    description: str = "",
) -> str:
    """The page's Markdown. ``tables`` pairs each table with its files (format -> name)."""
    lines = [f"# Study report: {study_name}", ""]
    if description:
        lines += [description.strip(), ""]
    counts = runs["status"].value_counts().to_dict() if "status" in runs else {}
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    lines += [
        f"Tracking store: {describe_store(tracking_uri)}. Cell runs: {summary or 'none'}.",
        "Regenerate with `d2bench report <study.yaml>`; J&F in percent.",
        "",
    ]
    for table, files in tables:
        links = " · ".join(f"[{fmt}]({name})" for fmt, name in files.items())
        lines += [f"## {table.layout.title}", "", to_markdown(table).rstrip(), "", links, ""]
    lines += ["## Figures", ""]
    for figure in figures:
        lines += [
            f"### {figure.title}",
            "",
            figure.description,
            "",
            f"![{figure.title}]({figure.png})",
            "",
            f"[PDF]({figure.pdf})",
            "",
        ]
    lines += ["## Runs", ""]
    lines += _runs_section(runs, ui_url, experiment_id)
    lines += ["## Study spec", ""]
    lines += ["```yaml", portable(spec_text.rstrip()) or "# not recorded", "```", ""]
    lines += ["## Environment (as recorded at launch)", ""]
    lines += _environment_section(environment)
    return "\n".join(lines)


def write_page(out_dir: Path, text: str) -> Path:
    path = out_dir / "README.md"
    path.write_text(text)
    return path
