import pytest

from tavaal_cls.config import ClsConfig
from tavaal_seg.core.config import ConfigError
from tavaal_seg.core.validation import load_config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\nvae:\n  size: [64, 128]\n")
    cfg = load_config(ClsConfig, path, ["train.lr=0.01", "active.strategy=vaal", "data.root=/x y"])
    assert cfg.train.lr == 0.01 and cfg.vae.size == [64, 128] and cfg.active.strategy == "vaal"
    assert cfg.data.root == "/x y"


def test_unknown_key_is_named_with_the_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lrr: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(ClsConfig, path)
    msg = str(err.value)
    assert "train.lrr" in msg and "did you mean 'lr'" in msg and "batch_size" in msg and str(path) in msg


def test_wrong_types_and_values_are_explained():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(ClsConfig, None, ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="active.strategy: expected one of coreset, entropy, lloss, random, tavaal, vaal"):
        load_config(ClsConfig, None, ["active.strategy=bald"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(ClsConfig, None, ["train.lr"])


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("c*.yaml")):
        if "cityscapes" in path.name or "camvid" in path.name:
            continue
        load_config(ClsConfig, path)


def test_config_by_name_or_path_from_any_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from tavaal_seg.core.config import config_dir, find_config, shipped_configs

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert config_dir() == repo / "configs"  # a checkout: the one set of files the wheel ships too
    assert find_config("cityscapes") == find_config("cityscapes.yaml") == repo / "configs" / "cityscapes.yaml"
    (tmp_path / "cityscapes.yaml").write_text("seed: 3\n")
    assert find_config("cityscapes.yaml") == Path("cityscapes.yaml")  # a file in the folder wins
    assert {"demo", "cifar10", "cityscapes", "camvid"} <= set(shipped_configs())
    with pytest.raises(ConfigError, match=r"--config nope: no such file, and not the name of a shipped config"):
        find_config("nope")
