"""What a re-run says about failed cells it leaves alone (they rerun only with --retry-failed)."""

from __future__ import annotations

from pathlib import Path

from study_helpers import write_study

from d2bench.launch.driver import nothing_to_do_line, retry_hint, skipped_failed_count
from d2bench.study import expand_cells, load_study
from d2bench.study.planner import CellRecord, make_plan


def _plan(tmp_path: Path, statuses: list[str | None]):
    rows = [{"name": f"r{i}", "train": {"lr": 1e-3 * (i + 1)}} for i in range(len(statuses))]
    cells = expand_cells(load_study(write_study(tmp_path, "messages", rows=rows)))
    records = [CellRecord(f"run{i}", cell.key, status, start_time=i)
               for i, (cell, status) in enumerate(zip(cells, statuses, strict=True))
               if status is not None]  # fmt: skip
    return make_plan(cells, records)


def test_nothing_to_do_counts_the_failed_cells_and_names_retry_failed(
    tmp_path: Path, synthetic_data: Path
) -> None:
    plan = _plan(tmp_path, ["FINISHED", "FINISHED", "FINISHED", "FAILED"])
    chosen = plan.to_schedule()
    assert chosen == []
    line = nothing_to_do_line(plan, skipped_failed_count(plan, chosen))
    assert line == "nothing to do: 3 done, 1 failed (rerun failed cells with --retry-failed)"
    done = _plan(tmp_path, ["FINISHED"])
    assert nothing_to_do_line(done, skipped_failed_count(done, [])) == "nothing to do: 1 done"


def test_scheduling_the_missing_cells_says_which_failed_ones_it_skips(
    tmp_path: Path, synthetic_data: Path
) -> None:
    plan = _plan(tmp_path, ["FAILED", None, "FINISHED"])
    plain = plan.to_schedule()
    assert [item.cell.row for item in plain] == ["r1"]
    assert retry_hint(skipped_failed_count(plan, plain)) == (
        "; skipping 1 failed cell(s) (rerun them with --retry-failed)"
    )
    retried = plan.to_schedule(retry_failed=True)
    assert skipped_failed_count(plan, retried) == 0 and retry_hint(0) == ""
    forced = plan.to_schedule(force_rows=["r0"])
    assert skipped_failed_count(plan, forced) == 0
