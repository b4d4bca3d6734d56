"""Study specs: the shipped studies load; bad specs fail with exit code 2 before any write."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from d2bench.cli import main
from d2bench.core.names import VARIANT_NAMES
from d2bench.study import StudyError, cell_key, expand_cells, load_study

REPO = Path(__file__).resolve().parents[1]


def _valid_tree(data_root: Path) -> dict[str, Any]:
    return {
        "name": "spec-test",
        "base": {"model": {"backbone": "tiny"}, "data": {"root": str(data_root)}},
        "rows": [
            {"name": "baseline", "model": {"variant": "baseline"}},
            {"name": "dcnv2", "model": {"variant": "dcnv2"}},
        ],
        "seeds": [0, 1],
    }


def _set(tree: dict, dotted: str, value: Any) -> dict:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return tree


def _mutations(tmp: Path) -> list[tuple[str, Any, str]]:
    """(id, change, text the message must contain)."""
    return [
        ("unknown-top-key", lambda t: t.update(colour="red"), "colour: unknown key"),
        ("unknown-base-key", lambda t: _set(t, "base.model.colour", 3), "base.model.colour"),
        ("unknown-variant", lambda t: _set(t, "rows.0.model.variant", "dcnv9"),
         "rows[0].model.variant"),
        ("unknown-activation", lambda t: _set(t, "rows.1.model.activation", "tanh"),
         "rows[1].model.activation"),
        ("wrong-type-seeds", lambda t: t.update(seeds="many"), "seeds"),
        ("wrong-type-row-field", lambda t: _set(t, "rows.0.train", {"epochs": "lots"}),
         "rows[0].train.epochs"),
        ("bad-precision", lambda t: _set(t, "rows.0.train", {"precision": "fp8"}),
         "rows[0].train.precision"),
        ("empty-rows", lambda t: t.update(rows=[]), "rows"),
        ("rows-not-list", lambda t: t.update(rows={"baseline": {}}), "rows"),
        ("duplicate-row", lambda t: _set(t, "rows.1.name", "baseline"), "rows[1].name"),
        ("row-without-name", lambda t: t["rows"][0].pop("name"), "rows[0].name"),
        ("row-unknown-section", lambda t: _set(t, "rows.0.trian", {"epochs": 1}),
         "rows[0].trian"),
        ("unset-variable", lambda t: _set(t, "base.data.root", "${D2BENCH_SURELY_UNSET_X}"),
         "base.data.root"),
        ("malformed-variable", lambda t: _set(t, "base.data.root", "${BROKEN"),
         "base.data.root"),
        ("missing-data-root", lambda t: _set(t, "base.data.root", str(tmp / "no-such-dir")),
         "data.root"),
        ("base-without-data", lambda t: t["base"].pop("data"), "base.data"),
        ("unknown-measure", lambda t: t.update(measure=["jf", "speed"]), "measure.1"),
        ("bad-reference", lambda t: t.update(reference="table9"), "reference"),
        ("negative-gpus", lambda t: t.update(resources={"gpus": -1}), "resources.gpus"),
        ("ddp-row-beyond-reserved-gpus",
         lambda t: _set(t, "rows.0.train", {"gpus": 2}), "rows[0].train.gpus"),
        ("unknown-backend", lambda t: t.update(backend={"name": "kubernetes"}), "backend.name"),
        ("duplicate-seeds", lambda t: t.update(seeds=[1, 1]), "seeds"),
        ("bad-axis-key", lambda t: t.update(axes={"model.nope": [1, 2]}), "axes.model.nope"),
        ("bad-axis-value", lambda t: t.update(axes={"model.activation": ["tanh"]}),
         "model.activation"),
        ("bad-study-name", lambda t: t.update(name="my study!"), "name"),
        ("unknown-synth-key", lambda t: t.update(synthetic_data={"videos": 3}),
         "synthetic_data"),
        ("missing-extends", lambda t: t.update(extends="nowhere.yaml"), "extends"),
    ]  # fmt: skip


def _ids() -> list[str]:
    return [case[0] for case in _mutations(Path("."))]


@pytest.mark.parametrize("case", _ids())
def test_bad_spec_exits_2_naming_the_key_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    mutate, expected = {c[0]: c[1:] for c in _mutations(tmp_path)}[case]
    tree = copy.deepcopy(_valid_tree(data_root))
    mutate(tree)
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    code = main(["run", str(study)])

    message = capsys.readouterr().err
    assert code == 2, message
    assert expected in message, message
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, expected",
    [("", "empty"), ("- a\n- b\n", "top level"), ("name: [unclosed\n", "not valid YAML")],
)
def test_unreadable_files_exit_2(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(path)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_the_valid_tree_itself_loads(tmp_path: Path) -> None:
    """Guards the mutations above: each fails because of its change, not the base tree."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(_valid_tree(tmp_path / "data")))
    study = load_study(path, check_data=True)
    assert study.rows == ("baseline", "dcnv2")
    assert len(expand_cells(study)) == 4


def test_shipped_studies_match_the_paper_tables() -> None:
    paper_env = {"D2BENCH_CSN_WEIGHTS": "none"}  # unset stops them: tests/test_paper_weights.py
    table1 = load_study(REPO / "studies" / "table1.yaml", environ=paper_env)
    table2 = load_study(REPO / "studies" / "table2.yaml", environ=paper_env)
    smoke = load_study(REPO / "studies" / "smoke.yaml", environ={})
    assert table1.rows == VARIANT_NAMES and table1.reference == "table1"
    assert [table1.row_variant(row) for row in table1.rows] == list(VARIANT_NAMES)
    assert table2.rows == ("none", "1+relu", "relu", "1+elu") and table2.reference == "table2"
    assert {table2.row_variant(row) for row in table2.rows} == {"d2conv3d_iv"}
    assert [table2.row_activation(row) for row in table2.rows] == list(table2.rows)
    assert table1.row_config("baseline").train.epochs == 20
    assert table1.row_config("baseline").data.root == "data/DAVIS"

    assert len(smoke.rows) == len(set(smoke.rows)) == 11
    assert len(expand_cells(smoke)) == 11 * len(smoke.seeds)
    assert smoke.rows_of_table("table1") == VARIANT_NAMES
    table2_rows = smoke.rows_of_table("table2")
    assert sorted(smoke.row_activation(row) for row in table2_rows) == sorted(table2.rows)
    assert smoke.row_config("baseline").model.backbone == "tiny"


def test_interpolation_uses_the_environment_then_the_default(tmp_path: Path) -> None:
    path = REPO / "studies" / "smoke.yaml"
    default = load_study(path, environ={})
    moved = load_study(path, environ={"D2BENCH_DATA": str(tmp_path)})
    assert default.row_config("aspp").data.root == "data/synthetic-davis"
    assert moved.row_config("aspp").data.root == str(tmp_path)


def test_cell_keys_are_content_hashes(tmp_path: Path) -> None:
    """Same config -> same key in any study and any runs folder; any config change -> new key."""
    root = tmp_path / "data"
    root.mkdir()
    first = _valid_tree(root)
    second = {**copy.deepcopy(first), "name": "other-study", "runs_dir": str(tmp_path / "x")}
    second["rows"] = [{"name": "renamed", "model": {"variant": "dcnv2"}}]
    paths = []
    for index, tree in enumerate((first, second)):
        paths.append(tmp_path / f"s{index}.yaml")
        paths[-1].write_text(yaml.safe_dump(tree))
    cells_a = {(c.row, c.seed): c.key for c in expand_cells(load_study(paths[0]))}
    cells_b = {(c.row, c.seed): c.key for c in expand_cells(load_study(paths[1]))}
    assert cells_a[("dcnv2", 0)] == cells_b[("renamed", 0)]
    assert len(set(cells_a.values())) == 4  # rows and seeds all differ
    cell = expand_cells(load_study(paths[0]))[0]
    config, inputs = cell.config, cell.inputs
    assert inputs is not None and cell_key(config, inputs) == cell.key
    changed = config.model_copy(update={"device": "cuda"})
    assert cell_key(changed, inputs) != cell_key(config, inputs)
    assert cell_key(config, inputs, protocol=1) != cell_key(config, inputs)


def test_axes_cross_every_row(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    tree = _valid_tree(tmp_path / "d")
    tree["axes"] = {"infer.gap": [1, 5]}
    path = tmp_path / "axes.yaml"
    path.write_text(yaml.safe_dump(tree))
    study = load_study(path)
    assert study.rows == ("baseline/gap=1", "baseline/gap=5", "dcnv2/gap=1", "dcnv2/gap=5")
    assert study.row_config("dcnv2/gap=1").infer.gap == 1


def test_extends_merges_and_a_cycle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    base = _valid_tree(tmp_path / "d")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text(
        yaml.safe_dump({"extends": "base.yaml", "name": "child", "seeds": [3]})
    )
    child = load_study(tmp_path / "child.yaml")
    assert child.name == "child" and child.seeds == (3,) and child.rows == ("baseline", "dcnv2")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(StudyError, match="circular"):
        load_study(tmp_path / "a.yaml")


def test_the_node_sweep_studies_fill_a_multi_gpu_node_at_full_size() -> None:
    """node-sweep: 3 Table 1 rows × 2 seeds at csn152/480p, one GPU a cell (Ray runs one cell
    per GPU); node-sweep-ddp: its IV row on two GPUs, in a study that reserves two."""
    sweep = load_study(REPO / "studies" / "node-sweep.yaml", environ={})
    cells = expand_cells(sweep)
    assert list(sweep.rows) == ["baseline", "dcnv2", "d2conv3d_iv"]
    assert len(cells) == 6 and sweep.resources.gpus == 1
    config = sweep.row_config(sweep.rows[2])
    assert config.model.backbone == "csn152" and config.train.gpus == 1
    assert (config.train.precision, config.model.sampling_precision) == ("fp16", "fp32")
    assert (sweep.spec.synthetic_data or {}).get("height") == 480
    ddp = load_study(REPO / "studies" / "node-sweep-ddp.yaml", environ={})
    assert ddp.resources.gpus == 2 and ddp.row_config(ddp.rows[0]).train.gpus == 2
