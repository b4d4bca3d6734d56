"""The cell config schema: defaults are the paper's protocol, mistakes name their key."""

from __future__ import annotations

import pytest

from d2bench.config import ConfigError, config_to_dict, load_cell_config, parse_cell_config


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
