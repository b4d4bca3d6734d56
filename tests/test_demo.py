"""`make demo`'s study, reduced: smoke.yaml's rows of both tables run end to end, the report has
both tables and every figure, and a second demo reuses every finished cell."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from study_helpers import TINY_SYNTH, d2bench

REPO = Path(__file__).resolve().parents[1]

#: One row per kind of layer and one Table 2 row: enough to fill both tables partly.
ROWS = ("baseline", "aspp", "d2conv3d_iv", "act_none")


def _reduced_smoke(folder: Path) -> Path:
    """smoke.yaml as shipped (and its base file), with fewer rows, one seed and tiny cells."""
    shutil.copy(REPO / "studies" / "paper-base.yaml", folder / "paper-base.yaml")
    spec = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    spec["rows"] = [row for row in spec["rows"] if row["name"] in ROWS]
    spec["seeds"] = [0]
    spec["synthetic_data"] = {**TINY_SYNTH, "sequences": 3, "val_sequences": 1}
    spec["base"]["train"].update(epochs=1, max_steps_per_epoch=2, batch_size=1)
    spec["base"]["model"].update(tiny_width=4, decoder_channels=8)
    spec["base"]["data"].update(clip_len=4, window=2, root=str(folder / "data"))
    spec["base"]["infer"].update(clip_len=4, gap=4)
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_demo_runs_both_tables_and_reuses_finished_cells(tmp_path: Path) -> None:
    study = _reduced_smoke(tmp_path)
    args = ("demo", "--study", str(study), "--backend", "local", "--out", str(tmp_path / "report"))
    first = d2bench(*args, cwd=tmp_path, timeout=1800)  # a safety net for loaded machines
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = tmp_path / "report"
    for table in ("table1", "table2"):
        for suffix in ("md", "tex", "csv"):
            assert (report / f"{table}.{suffix}").stat().st_size > 0
    table1 = (report / "table1.md").read_text()
    assert "Revised Baseline" in table1
    assert "not in study" in table1  # rows of the paper left out of the study are shown
    # both checkpoints, the as-released one (selected on the evaluation set) first
    header = table1.splitlines()[0]
    assert header.index("J&F best-val (ours)") < header.index("| J&F final |")
    assert "selected on the evaluation set" in table1
    assert "measured by `d2bench measure` on cpu" in table1  # FPS/Mem from the measure step
    for figure in ("oob", "jf_fps", "training_curves", "maps"):
        for suffix in ("png", "pdf"):
            assert (report / "figures" / f"{figure}.{suffix}").stat().st_size > 1000
    assert "d2bench ui" in first.stdout

    second = d2bench(*args, cwd=tmp_path, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "scheduling" not in second.stdout
    plan = d2bench("plan", str(study), cwd=tmp_path, check=True)
    assert plan.stdout.count(" done") >= len(ROWS)
