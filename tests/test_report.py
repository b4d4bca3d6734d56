"""Report tables and figures from frames of known values (no tracker involved)."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from io import StringIO
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from d2bench.report import (
    build_table,
    jf_fps_figure,
    maps_figure,
    oob_figure,
    read_maps,
    save_figure,
    table1_layout,
    table2_layout,
    to_csv,
    to_latex,
    to_markdown,
    training_curves_figure,
)
from d2bench.report.maps import clip_frames
from d2bench.report.page import describe_store, portable, run_url

matplotlib.use("Agg")


def _runs(variant, values, status="FINISHED", activation=None, start=0):
    """One frame row per seed; ``values`` maps a metric column to one value per seed."""
    count = len(next(iter(values.values()))) if values else 1
    return [
        {
            "run_id": f"{variant}-{activation}-{status}-{start + seed}",
            "row": variant,
            "seed": start + seed,
            "status": status,
            "variant": variant,
            "activation": activation,
            **{key: seq[seed] for key, seq in values.items()},
        }
        for seed in range(count)
    ]


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = [
        *_runs(
            "baseline",
            {
                "jf_mean": [0.80, 0.82, 0.84],
                "fps": [5.0, 5.2, 5.4],
                "mem_alloc_gb": [1.0, 1.0, 1.0],
            },
        ),
        *_runs(
            "aspp",
            {
                "jf_mean": [0.81, 0.83, 0.85],
                "fps": [4.5, 4.6, 4.7],
                "mem_alloc_gb": [1.1, 1.1, 1.1],
            },
        ),
        *_runs(
            "dcnv1",
            {
                "jf_mean": [0.90, 0.91, 0.92],
                "fps": [4.0, 4.0, 4.0],
                "mem_alloc_gb": [1.2, 1.2, 1.2],
            },
        ),
        *_runs("dcnv2", {"jf_mean": [0.86], "fps": [4.8], "mem_alloc_gb": [1.3]}),
        *_runs("dcnv2", {}, status="FAILED", start=1),
        *_runs("d2conv3d_i", {}, status="FAILED"),
        *_runs("d2conv3d_ii", {}, status="RUNNING"),
    ]
    return pd.DataFrame(rows)


def _welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p-value from its textbook formula (independent of ttest_ind)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def _layout_without_iv():
    layout = table1_layout()
    rows = tuple(
        replace(row, planned=row.select.get("variant") != "d2conv3d_iv") for row in layout.rows
    )
    return replace(layout, rows=rows)


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Variant"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


def test_table1_statistics_bold_significance_and_states(frame):
    table = build_table(frame, _layout_without_iv(), protocol="synthetic DAVIS, CPU")
    by_label = {row.label: row for row in table.rows}
    dcnv1 = by_label["DCNv1"].cells[0]
    assert dcnv1.mean == pytest.approx(91.0)
    assert dcnv1.std == pytest.approx(1.0)
    assert dcnv1.n == 3
    assert dcnv1.diff == pytest.approx(91.0 - 84.4)
    assert dcnv1.p_value == pytest.approx(_welch_p([90, 91, 92], [80, 82, 84]), rel=1e-6)
    aspp = by_label["ASPP"].cells[0]
    assert aspp.p_value == pytest.approx(_welch_p([81, 83, 85], [80, 82, 84]), rel=1e-6)
    assert not aspp.significant
    assert [row.status for row in table.rows] == [
        "ok",
        "ok",
        "ok",
        "partial",
        "failed",
        "running",
        "missing",
        "not in study",
    ]

    rows = _md_rows(to_markdown(table))
    assert rows["Revised Baseline"][:7] == [
        "–",
        "82.0 ± 2.0 (n=3)",
        "83.5",
        "−1.5",
        "**5.20 ± 0.20** (n=3)",
        "4.96",
        "+0.24",
    ]
    assert rows["Revised Baseline"][7] == "**1.00 ± 0.00** (n=3)"
    assert rows["ASPP"][1] == "83.0 ± 2.0 (n=3)"
    # Best J&F, significantly above the baseline (p ≈ 0.008); the FPS drop too.
    assert rows["DCNv1"][1] == "**91.0 ± 1.0**† (n=3)"
    assert rows["DCNv1"][3] == "+6.6"
    assert rows["DCNv1"][4] == "4.00 ± 0.00† (n=3)"
    # Identical memory on both sides: no test, so no mark.
    assert rows["DCNv1"][7] == "1.20 ± 0.00 (n=3)"
    assert rows["DCNv2"][1] == "86.0 (n=1, 1 failed)"
    assert rows["(I) S (\\|D\\|=1)"][1:4] == ["failed", "84.2", "–"]
    assert rows["(II) S (\\|D\\|=2)"][1] == "running"
    assert rows["(III) S+T (\\|D\\|=3)"][1] == "missing"
    assert rows["(IV) S+T (\\|D\\|=3)"][1] == "not in study"
    assert len(rows) == 8


def test_caption_states_test_threshold_and_protocol(frame):
    caption = build_table(frame, table1_layout(), protocol="seeds 0, 1, 2").caption
    assert "Welch's t-test" in caption
    assert "p < 0.05" in caption
    assert "Revised Baseline" in caption
    assert caption.endswith("Ours: seeds 0, 1, 2.")
    single = frame[frame["seed"] == 0]
    caption = build_table(single, table1_layout()).caption
    assert "No significance test" in caption and "†" not in caption


def test_cpu_memory_falls_back_to_peak_rss(frame):
    cpu = frame.rename(columns={"mem_alloc_gb": "peak_rss_gb"})
    table = build_table(cpu, table1_layout())
    assert table.sources[2] == "peak_rss_gb"
    assert table.rows[0].cells[2].mean == pytest.approx(1.0)
    assert "peak resident memory" in table.caption


def test_table2_rows_by_activation_against_its_own_1_elu_row(frame):
    rows = [
        *frame.to_dict("records"),
        *_runs("d2conv3d_iv", {"jf_mean": [0.70, 0.72]}, activation="none"),
        *_runs("d2conv3d_iv", {"jf_mean": [0.86, 0.88]}),  # default activation (1+elu)
    ]
    table = build_table(pd.DataFrame(rows), table2_layout())
    assert [row.label for row in table.rows] == ["None", "1 + ReLU", "ReLU", "1 + elu"]
    none, relu_plus, _, elu = table.rows
    assert none.cells[0].mean == pytest.approx(71.0)
    assert none.cells[0].std == pytest.approx(math.sqrt(2.0))
    assert relu_plus.status == "missing"
    assert elu.cells[0].best and not none.cells[0].best
    # Tested against the table's own "1 + elu" row, never against the Table 1 baseline.
    assert elu.cells[0].p_value is None
    assert none.cells[0].p_value == pytest.approx(_welch_p([70, 72], [86, 88]), rel=1e-6)
    assert "1 + elu row" in table.caption
    assert "Baseline" not in table.caption


def test_csv_has_every_row_and_statistic(frame):
    parsed = pd.read_csv(StringIO(to_csv(build_table(frame, table1_layout()))))
    assert len(parsed) == 8
    dcnv1 = parsed[parsed["label"] == "DCNv1"].iloc[0]
    assert dcnv1["jf_mean"] == pytest.approx(91.0)
    assert dcnv1["jf_std"] == pytest.approx(1.0)
    assert dcnv1["jf_n"] == 3
    assert bool(dcnv1["jf_best"]) and bool(dcnv1["jf_significant"])
    assert parsed["status"].tolist()[3:5] == ["partial", "failed"]
    assert dcnv1["jf_paper"] == pytest.approx(84.4)
    assert math.isnan(parsed[parsed["label"] == "(III) S+T (|D|=3)"].iloc[0]["jf_mean"])


def _unescaped(text: str, char: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(char), text))


def _spanned_columns(line: str) -> int:
    """Columns a tabular line fills: one per cell, n per ``\\multicolumn{n}``."""
    cells = re.split(r"(?<!\\)&", line.removesuffix(r"\\"))
    spans = [re.match(r"\s*\\multicolumn\{(\d+)\}", cell) for cell in cells]
    return sum(int(m.group(1)) if m else 1 for m in spans)


def _check_latex_structure(text: str, body_rows: int) -> None:
    """Balanced braces and environments, booktabs rules in order, full rows of cells."""
    assert _unescaped(text, "{") == _unescaped(text, "}")
    depth = 0
    for char in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) == 1
    assert text.index(r"\toprule") < text.index(r"\midrule") < text.index(r"\bottomrule")
    assert re.findall(r"\\begin\{(\w+)\}", text) == ["table", "tabular"]
    assert re.findall(r"\\end\{(\w+)\}", text) == ["tabular", "table"]
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1)
    body = text[text.index(r"\midrule") : text.index(r"\bottomrule")].splitlines()[1:]
    assert len(body) == body_rows
    header = text[text.index(r"\toprule") : text.index(r"\midrule")].splitlines()[1:]
    for line in [*header, *body]:
        if line.startswith(r"\cmidrule"):
            continue
        assert line.endswith(r"\\")
        assert _spanned_columns(line) == len(spec), line
    assert text.isascii()  # every symbol spelled as a LaTeX command


def test_latex_is_structurally_valid(frame):
    text = to_latex(build_table(frame, _layout_without_iv()), label="tab:x")
    _check_latex_structure(text, body_rows=8)
    assert r"\multicolumn{3}{c}{J\&F}" in text
    assert r"(\textbar{}D\textbar{}=1)" in text  # a bare | is not text in LaTeX
    assert r"\textbf{91.0 $\pm$ 1.0}$^\dagger$" in text


def _oob_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    sampled = out["variant"].isin(["dcnv1", "dcnv2"]) & (out["status"] == "FINISHED")
    for kind, share in (("full", 0.02), ("partial", 0.05)):
        out[f"oob_{kind}"] = np.where(sampled, share, np.nan)
        for axis, factor in zip("tyx", (2.0, 0.5, 0.6), strict=True):
            out[f"oob_{kind}_{axis}"] = np.where(sampled, share * factor, np.nan)
    return out


def _history(frame: pd.DataFrame, steps: int) -> pd.DataFrame:
    finished = frame[frame["status"] == "FINISHED"]["run_id"]
    return pd.DataFrame(
        [(run_id, step, 1.0 / (1 + step)) for run_id in finished for step in range(steps)],
        columns=["run_id", "step", "value"],
    )


def _maps_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez_compressed(
        path,
        **{
            "decoder.rf2.0/dilation": 1 + rng.random((3, 3, 4, 6, 8), dtype=np.float32),
            "decoder.rf2.0/modulation_mean": rng.random((3, 4, 6, 8), dtype=np.float32),
            "decoder.rf3.0/dilation": 1 + rng.random((3, 3, 2, 3, 4), dtype=np.float32),
            "frames": rng.integers(0, 255, (12, 24, 32, 3), dtype=np.uint8),
            "__metadata__": np.asarray('{"sequence": "blob"}'),
        },
    )
    return path


def test_every_figure_is_written_and_non_empty(frame, tmp_path):
    maps = read_maps(_maps_file(tmp_path / "maps.npz"))
    assert set(maps.layers) == {"decoder.rf2.0", "decoder.rf3.0"}
    figures = {
        "oob": oob_figure(_oob_frame(frame)),
        "jf_fps": jf_fps_figure(frame),
        "curves": training_curves_figure(
            frame, {"train/loss": _history(frame, 50), "epoch/loss": _history(frame, 3)}
        ),
        "maps": maps_figure(maps, plan={"clip_len": 4, "gap": 2}),
        "oob_missing": oob_figure(frame),
        "maps_missing": maps_figure(None, "not recorded"),
    }
    for stem, figure in figures.items():
        for path in save_figure(figure, tmp_path / "figures", stem):
            assert path.stat().st_size > 1000, path
    # Middle clip (1 of 0..2) starts at frame 2; its 4 map steps sit beside frames 2..5.
    frame_axes = [ax for ax in figures["maps"].axes if ax.get_ylabel().startswith("frame")]
    assert [ax.get_ylabel() for ax in frame_axes] == ["frame 2", "frame 3", "frame 4", "frame 5"]
    png = (tmp_path / "figures" / "oob.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "figures" / "maps.pdf").read_bytes().startswith(b"%PDF")


def test_maps_reader_accepts_what_the_recorder_saves(tmp_path):
    save_maps = pytest.importorskip("d2bench.metrics.sampling_maps").save_maps
    rng = np.random.default_rng(1)
    arrays = {
        "rf2.conv": {
            "dilation": 1 + rng.random((2, 3, 4, 5, 6)),
            "modulation_mean": rng.random((2, 4, 5, 6)),
        }
    }
    path = save_maps(tmp_path / "maps", arrays, {"sequence": "blob", "variant": "d2conv3d_iv"})
    maps = read_maps(path)
    assert maps.metadata["sequence"] == "blob"
    assert maps.layers["rf2.conv"]["dilation"].shape == (2, 3, 4, 5, 6)
    figure = maps_figure(maps)
    assert figure.axes and "rf2.conv" in figure.get_suptitle()


def test_clip_frames_follow_the_inference_plan():
    assert clip_frames({"gap": 5, "clip_len": 8}, 2, 14) == [10, 11, 12, 13, 13, 13, 13, 13]
    assert clip_frames({"clips": [[0, 1], [2, 3]]}, 1, 10) == [2, 3]
    assert clip_frames({"clip_starts": [0, 3], "clip_len": 2}, 1, 10) == [3, 4]
    assert clip_frames({"sequence": "blob"}, 0, 10) is None


def test_page_hides_this_machines_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert describe_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db") == "SQLite `mlruns/mlflow.db`"
    assert portable(f"root: {Path.home()}/davis") == "root: ~/davis"
    assert run_url("abc", None, "1") is None
    assert run_url("abc", "http://h:5000/", "1") == "http://h:5000/#/experiments/1/runs/abc"


def test_bad_maps_file_is_named(tmp_path):
    path = tmp_path / "maps.npz"
    path.write_text("not a zip")
    with pytest.raises(ValueError, match=r"maps\.npz"):
        read_maps(path)


def test_a_study_without_paper_tables_gets_its_own_table():
    from d2bench.report import layouts_for_study
    from d2bench.study import expand_cells, parse_study

    study = parse_study(
        {
            "name": "custom",
            "synthetic_data": True,  # keys without a data folder
            "base": {"data": {"root": "data"}, "model": {"backbone": "tiny"}},
            "seeds": [0, 1],
            "rows": [
                {"name": "plain", "model": {"variant": "baseline"}},
                {"name": "d2", "model": {"variant": "iv", "activation": "relu"}},
            ],
        }
    )
    cells = expand_cells(study)
    (layout,) = layouts_for_study(study, cells)
    assert layout.name == "custom"
    assert [row.label for row in layout.rows] == [
        "plain (Revised Baseline)",
        "d2 ((IV) S+T (|D|=3), ReLU)",
    ]
    runs = pd.DataFrame(
        [
            {"run_id": c.key, "cell_key": c.key, "status": "FINISHED", "jf_mean": jf}
            for c, jf in zip(cells, [0.5, 0.5, 0.7, 0.9], strict=True)
        ]
    )
    table = build_table(runs, layout)
    assert table.rows[1].cells[0].mean == pytest.approx(80.0)
    assert table.rows[1].cells[0].p_value == pytest.approx(_welch_p([70, 90], [50, 50]))
    assert "row plain" in layout.reference_label and table.rows[0].cells[0].paper is None
    header = to_markdown(table).splitlines()[0]
    assert header == "| Row | J&F final | FPS | Mem (GB) |"  # no paper columns for own rows
    _check_latex_structure(to_latex(table), body_rows=2)


def test_paper_rows_outside_the_study_are_marked_not_planned():
    from d2bench.report import layouts_for_study
    from d2bench.study import expand_cells, parse_study

    study = parse_study(
        {
            "name": "two",
            "reference": "table1",
            "synthetic_data": True,  # keys without a data folder
            "base": {"data": {"root": "data"}},
            "rows": [{"name": "b", "model": {"variant": "baseline"}}],
        }
    )
    (layout,) = layouts_for_study(study, expand_cells(study))
    assert [row.planned for row in layout.rows] == [True] + [False] * 7


def test_a_variant_at_two_settings_shows_the_first_and_lists_all():
    from d2bench.report import layouts_for_study
    from d2bench.study import expand_cells, parse_study

    study = parse_study(
        {
            "name": "gaps",
            "reference": "table1",
            "synthetic_data": True,  # keys without a data folder
            "base": {"data": {"root": "data"}},
            "axes": {"infer.gap": [1, 5]},
            "rows": [{"name": "b", "model": {"variant": "baseline"}}],
        }
    )
    cells = expand_cells(study)
    table1, every_row = layouts_for_study(study, cells)
    first_keys = tuple(sorted(c.key for c in cells if c.row == "b/gap=1"))
    assert table1.rows[0].select["cell_key"] == first_keys
    assert table1.reference["cell_key"] == first_keys
    assert "Several study rows share a variant" in table1.paper_note
    assert every_row.name == "all_rows"
    assert [row.label for row in every_row.rows] == [
        "b/gap=1 (Revised Baseline)",
        "b/gap=5 (Revised Baseline)",
    ]


def test_missing_oob_and_memory_metrics_are_read_from_the_runs_files():
    from d2bench.report.artifacts import fill_missing_metrics

    files = {
        ("a", "oob.json"): {
            "total": {
                "fully_outside_share": 0.1,
                "partly_outside_share": 0.25,
                "per_axis": {"t": {"fully_outside_share": 0.05, "partly_outside_share": 0.2}},
            }
        },
        ("a", "result.json"): {"speed": {"memory": {"kind": "cpu_rss", "peak_rss_gb": 0.64}}},
        ("b", "result.json"): {"speed": {"memory": {"max_allocated_gb": 1.9}}},
    }
    asked = []

    def fetch(run_id, name):
        asked.append((run_id, name))
        return files.get((run_id, name))

    runs = pd.DataFrame(
        [
            {"run_id": "a", "status": "FINISHED"},
            {"run_id": "b", "status": "FINISHED", "oob_full": 0.3},
            {"run_id": "c", "status": "FAILED"},
        ]
    )
    filled = fill_missing_metrics(runs, fetch).set_index("run_id")
    assert filled.loc["a", "oob_full"] == 0.1 and filled.loc["a", "oob_partial_t"] == 0.2
    assert math.isnan(filled.loc["a", "oob_full_y"])
    assert filled.loc["a", "peak_rss_gb"] == 0.64
    assert filled.loc["b", "oob_full"] == 0.3 and filled.loc["b", "mem_alloc_gb"] == 1.9
    assert ("b", "oob.json") not in asked and all(run != "c" for run, _ in asked)
