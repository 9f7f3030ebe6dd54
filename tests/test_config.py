from pathlib import Path

import pytest

from lungcancer.config import (
    DataConfig,
    TrainConfig,
    WindowConfig,
    load_section,
    override,
    save_configs,
)
from lungcancer.errors import ConfigError


def test_yaml_round_trip(tmp_path: Path) -> None:
    data = DataConfig(windows=(WindowConfig(-600, 1500), WindowConfig(40, 400)), image_size=64)
    train = TrainConfig(epochs=3, lr=3e-4)
    path = tmp_path / "config.yaml"
    save_configs(path, data=data, train=train)
    assert load_section(path, "data", DataConfig) == data
    assert load_section(path, "train", TrainConfig) == train


def test_unknown_key_names_the_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_section(path, "train", TrainConfig)
    assert "train.epocs" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="wrong type"):
        load_section(path, "train", TrainConfig)


def test_override_ignores_unset_flags() -> None:
    cfg = override(TrainConfig(), epochs=7, lr=None)
    assert cfg.epochs == 7
    assert cfg.lr == TrainConfig().lr
