"""The command line itself: help text, --version, --json, progress lines, per-cell lines."""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from study_helpers import write_study

from d2bench.cli import build_parser, main
from d2bench.core.config import ModelConfig
from d2bench.core.elapsed import elapsed_text, format_duration
from d2bench.engine.progress import Progress
from d2bench.launch.ray_backend import quiet_ray_environment

ANSI = re.compile(r"\x1b\[")


def _arguments(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("d2bench",)
) -> Iterator[tuple[str, argparse.Action]]:
    """Every argument of every (sub-)command, with the command line that reaches it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_argument_of_every_command_has_help_and_shows_its_default() -> None:
    arguments = list(_arguments(build_parser()))
    assert len(arguments) > 50  # the walk reached the sub-commands' arguments
    missing = [f"{where} {a.option_strings or a.dest}" for where, a in arguments
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]  # fmt: skip
    assert not missing, f"arguments without help text: {missing}"
    unset = (None, False, [], argparse.SUPPRESS)
    with_default = [(where, a) for where, a in arguments
                    if a.option_strings and a.default not in unset]  # fmt: skip
    silent = [f"{where} {a.option_strings}" for where, a in with_default
              if "default" not in a.help.lower()]  # fmt: skip
    assert not silent, f"options whose help does not give their default: {silent}"


def test_version_names_the_package_and_its_stack(capsys: pytest.CaptureFixture) -> None:
    from d2bench import __version__

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"d2bench {__version__}") and "torch" in out


def _study_with_states(tmp_path: Path, synthetic_data: Path) -> tuple[Path, str, list]:
    """A study of three cells: one finished run, one failed, one never started."""
    from d2bench.study import expand_cells, load_study
    from d2bench.tracking import Tracker

    rows = [{"name": name, "model": {"variant": name}} for name in ("baseline", "aspp", "dcnv1")]
    path = write_study(tmp_path, "cli-json", rows=rows)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    study = load_study(path)
    cells = expand_cells(study)
    tracker = Tracker(uri)
    parent = tracker.ensure_study_run(study.name, study.text, "local", {"git": "test"})
    done, failed = (tracker.create_cell_run(study.name, parent, cell, "local", tmp_path, "test")
                    for cell in cells[:2])  # fmt: skip
    tracker.cell_logger(done).finished({"metrics": {"jf_mean": 0.5}}, tmp_path)
    tracker.cell_logger(failed).failed("Traceback: boom\n", None)
    return path, uri, cells


def test_plan_and_status_json_hold_every_cell_with_its_state(
    tmp_path: Path, synthetic_data: Path, capsys: pytest.CaptureFixture
) -> None:
    path, uri, cells = _study_with_states(tmp_path, synthetic_data)
    expected = {cells[0].key: "done", cells[1].key: "failed", cells[2].key: "missing"}

    assert main(["plan", str(path), "--json", "--tracking-uri", uri]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["format"] == 1 and plan["study"] == "cli-json"
    assert {cell["key"]: cell["state"] for cell in plan["cells"]} == expected
    assert plan["counts"] == {"done": 1, "running": 0, "failed": 1, "missing": 1, "stale": 0}
    first = plan["cells"][0]
    assert (first["row"], first["seed"], first["label"]) == ("baseline", 0, "baseline (seed 0)")
    assert first["run_id"] and plan["cells"][2]["run_id"] is None

    assert main(["status", str(path), "--json", "--tracking-uri", uri]) == 1  # a failed cell
    status = json.loads(capsys.readouterr().out)
    assert {cell["key"]: cell["state"] for cell in status["cells"]} == expected
    for cell in status["cells"]:
        assert {"job", "job_state", "stale_reason", "worker"} <= cell.keys()
        assert cell["job_state"] is None and cell["stale_reason"] is None


def test_progress_writes_plain_lines_when_redirected_and_a_bar_on_a_terminal() -> None:
    redirected = io.StringIO()
    progress = Progress("epoch 1/2", 3, stream=redirected, interval_s=0.0)
    for step in range(1, 4):
        progress.update(step, loss=0.5)
    lines = redirected.getvalue().splitlines()
    assert [line.split("  ")[:2] for line in lines] == [["epoch 1/2", f"{s}/3"] for s in (1, 2, 3)]
    assert "elapsed, ~" in lines[0] and "left" in lines[0]  # the estimate, while some is left
    assert lines[-1].endswith("elapsed")
    assert not ANSI.search(redirected.getvalue()) and "\r" not in redirected.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress("epoch 1/2", 4, stream=terminal)
    progress.update(2, loss=0.5)
    text = terminal.getvalue()
    assert text.startswith("\r\x1b[K") and "[############............]  2/4" in text
    assert not text.endswith("\n")  # redrawn in place until the last step


def test_elapsed_and_left_read_as_durations() -> None:
    assert [format_duration(s) for s in (4.4, 61, 3725)] == ["4s", "1m01s", "1h02m"]
    assert elapsed_text(60.0, 1, 3) == "1m00s elapsed, ~2m00s left"
    assert elapsed_text(90.0, 3, 3) == "1m30s elapsed"


def test_a_cells_line_names_the_dilation_activation_of_a_d2_variant() -> None:
    assert ModelConfig(variant="d2conv3d_iv", activation="relu").describe() == (
        "d2conv3d_iv (activation relu)"
    )
    assert ModelConfig(variant="d2conv3d_iv").describe() == "d2conv3d_iv (activation 1+elu)"
    assert ModelConfig(variant="dcnv1").describe() == "dcnv1"


def test_ray_is_quiet_and_colourless_when_redirected_and_user_settings_win() -> None:
    redirected: dict[str, str] = {"RAY_DEDUP_LOGS": "1"}
    quiet_ray_environment(redirected, tty=False)
    assert redirected["RAY_COLOR_PREFIX"] == "0" and redirected["RAY_AIR_NEW_OUTPUT"] == "0"
    assert redirected["RAY_DEDUP_LOGS"] == "1"  # the user's own choice stays
    terminal: dict[str, str] = {}
    quiet_ray_environment(terminal, tty=True)
    assert "RAY_COLOR_PREFIX" not in terminal and terminal["RAY_DEDUP_LOGS"] == "0"


def test_the_cell_log_line_of_an_activation_row_names_its_activation(
    tmp_path: Path, synthetic_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The activation rows differ from d2conv3d_iv only there: their lines must say which."""
    from d2bench.runner.cell import run_cell
    from d2bench.study import expand_cells, load_study

    monkeypatch.setenv("D2BENCH_OPS", "reference")  # no compiled build needed
    rows = [{"name": "act_relu", "model": {"variant": "d2conv3d_iv", "activation": "relu"},
             "train": {"epochs": 0}}]  # fmt: skip
    (cell,) = expand_cells(load_study(write_study(tmp_path, "cli-activation", rows=rows)))
    # A validation set that is not there stops the cell right after its first line (quick).
    data = cell.config.data.model_copy(update={"val_set": "no-such-set"})
    config = cell.config.model_copy(update={"data": data})
    with pytest.raises(Exception, match="no-such-set"):
        run_cell(config, tmp_path / "cell", key=cell.key, show_progress=False)
    line = "d2conv3d_iv (activation relu) on cpu"
    assert line in (tmp_path / "cell" / "cell.log").read_text()
    assert line in capsys.readouterr().err


def test_a_trial_worker_drops_a_systemexit_from_a_finalizer_and_reports_other_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's SIGTERM handler, run inside a weak-reference callback as Tune ends a finished
    trial's actor, printed an "Exception ignored ... SystemExit" traceback under the cells."""
    import sys

    from d2bench.launch.ray_backend import quiet_exit_in_finalizers

    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(info.exc_value))
    quiet_exit_in_finalizers()
    quiet_exit_in_finalizers()  # once per process, however many trials

    class Finalized:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error

    Finalized(SystemExit(1))
    Finalized(ValueError("a real error"))
    assert [type(error) for error in seen] == [ValueError]


def test_system_metrics_interval_is_read_from_the_environment_and_checked() -> None:
    from d2bench.tracking.system_metrics import ENV, sampling_interval

    assert sampling_interval({}) is None and sampling_interval({ENV: "0"}) is None
    assert sampling_interval({ENV: "2.5"}) == 2.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ValueError, match=f"{ENV}={bad!r}: expected a sampling interval"):
            sampling_interval({ENV: bad})


def test_run_refuses_a_bad_system_metrics_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = write_study(tmp_path, "sysmetrics")
    monkeypatch.delenv("D2BENCH_SYSTEM_METRICS", raising=False)
    assert main(["run", str(study), "--system-metrics", "0", "--dry-run"]) == 2
    assert "--system-metrics 0: the interval must be > 0 seconds" in capsys.readouterr().err
    monkeypatch.setenv("D2BENCH_SYSTEM_METRICS", "soon")
    assert main(["run", str(study), "--dry-run"]) == 2
    assert "D2BENCH_SYSTEM_METRICS='soon'" in capsys.readouterr().err
