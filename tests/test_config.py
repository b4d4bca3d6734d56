"""The cell config schema: defaults are the paper's protocol, mistakes name their key."""

from __future__ import annotations

import pytest

from d2bench.core.config import ConfigError, config_to_dict, load_cell_config, parse_cell_config


def test_defaults_are_the_papers_table1_protocol() -> None:
    config = parse_cell_config({"data": {"root": "DAVIS"}})
    assert config.model.backbone == "csn152"
    assert config.model.replace_blocks == ("rf3", "rf2")
    assert (config.train.epochs, config.train.batch_size, config.train.lr) == (20, 2, 1e-5)
    assert config.train.clip_grad_norm == 10.0
    assert (config.infer.clip_len, config.infer.gap, config.infer.threshold) == (8, 5, 0.5)
    assert config.data.train_size == (480, 854)


def test_aliases_are_normalised() -> None:
    config = parse_cell_config(
        {"data": {"root": "x"}, "model": {"variant": "IV", "activation": "elu"}}
    )
    assert config.model.variant == "d2conv3d_iv"
    assert config.model.activation == "1+elu"


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"data": {"root": "x"}, "modle": {}}, "modle", "unknown key"),
        ({"data": {"root": "x"}, "model": {"variant": "dcnv3"}}, "model.variant", "known names"),
        ({"data": {"root": "x"}, "train": {"lr": "fast"}}, "train.lr", "number"),
        ({"data": {"root": "x"}, "infer": {"gap": 0}}, "infer.gap", "must be ≥ 1 and ≤ 256"),
        ({}, "data", "required"),
        ({"data": {"root": "x", "clip_len": 8, "window": 2}}, "data", "2·window"),
        (
            {"data": {"root": "x"}, "model": {"variant": "dcnv2", "activation": "relu"}},
            "model",
            "D²Conv3D variants",
        ),
    ],
)
def test_errors_name_the_key_path(data: dict, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cell_config(data, "cell.yaml")
    message = str(caught.value)
    assert f"cell.yaml: {path}:" in message and words in message


def test_round_trip_through_yaml(tmp_path) -> None:
    import yaml

    config = parse_cell_config({"data": {"root": "x"}, "model": {"variant": "dcnv2"}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert load_cell_config(path) == config


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_cell_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cell_config(bad)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "data:\n  root: x\ntrain:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n",
            "train.epochs: duplicate key 'epochs' (lines 4 and 6)",
        ),
        ("data: {root: x}\ndata: {root: y}\n", "data: duplicate key 'data' (lines 1 and 2)"),
    ],
)
def test_a_duplicated_key_is_refused_with_both_lines(tmp_path, text: str, words: str) -> None:
    """PyYAML keeps the last of two equal keys; a cell must not run with a guess."""
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_cell_config(path)
    assert words in str(caught.value) and "cell.yaml" in str(caught.value)


def test_a_file_that_is_not_text_is_one_clean_error(tmp_path) -> None:
    path = tmp_path / "cell.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(ConfigError, match=r"cell\.yaml: not a text file \(byte 0x89"):
        load_cell_config(path)
    with pytest.raises(ConfigError, match="is not a file"):
        load_cell_config(tmp_path)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"train": {"epochs": True}}, "train.epochs: must be an integer"),
        ({"train": {"epochs": 1.0e12}}, "train.epochs: must be an integer"),
        ({"train": {"lr": float("inf")}}, "train.lr: must be a finite number"),
        ({"train": {"seed": 2**64}}, "train.seed: must be ≥ 0 and ≤ 2**63-1"),
        ({"device": "cuda0"}, "device: unknown device 'cuda0'; allowed: auto, cpu"),
        ({"train": {"lrr": 1}}, "train.lrr: unknown key (did you mean 'lr'?); allowed: epochs"),
        ({"data": {"root": ""}}, "data.root: must name the data folder"),
    ],
)
def test_values_no_one_means_are_refused(change: dict, words: str) -> None:
    data = {"data": {"root": "x"}, **change}
    with pytest.raises(ConfigError) as caught:
        parse_cell_config(data, "cell.yaml")
    assert str(caught.value).startswith(f"cell.yaml: {words}")
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_devices_torch_knows_are_accepted(device: str) -> None:
    assert parse_cell_config({"data": {"root": "x"}, "device": device}).device == device


def test_train_refuses_a_duplicated_key_before_writing(tmp_path, monkeypatch, capsys) -> None:
    from d2bench.cli import main

    path = tmp_path / "my-cell.yaml"
    path.write_text("data: {root: x}\nmodel: {variant: baseline, variant: dcnv2}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "model.variant: duplicate key 'variant' (lines 2 and 2)" in err and "Traceback" not in err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-cell.yaml"]


def test_replace_blocks_are_checked_against_the_decoders_blocks() -> None:
    torch_models = pytest.importorskip("d2bench.models")
    from d2bench.core.config import DECODER_BLOCKS

    assert DECODER_BLOCKS == torch_models.REFINEMENT_BLOCKS
    with pytest.raises(ConfigError, match=r"model\.replace_blocks: unknown decoder block 'rf4'"):
        parse_cell_config({"data": {"root": "x"}, "model": {"replace_blocks": ["rf3", "rf4"]}})
    config = parse_cell_config({"data": {"root": "x"}, "model": {"replace_blocks": ["rf1"]}})
    assert config.model.replace_blocks == ("rf1",)
