from pathlib import Path

import pytest

from tavaal_cls.config import ClsConfig
from tavaal_seg.core.config import BaseConfig, ConfigError, read_yaml
from tavaal_seg.core.validation import load_config
from tavaal_seg.segmentation.config import SegConfig


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


def test_base_config_validates_the_core_sections():
    """The core's own config class checks ranges and registry names too (was accepted, then a KeyError)."""
    with pytest.raises(ConfigError, match="active.budget: expected a positive number of images, got -5"):
        load_config(BaseConfig, None, ["active.budget=-5"])
    with pytest.raises(ConfigError, match="train.optimizer: expected one of adam, adamw, sgd, got 'lion'"):
        load_config(BaseConfig, None, ["train.optimizer=lion"])
    assert load_config(BaseConfig, None, ["train.optimizer=adam"]).train.optimizer == "adam"


# every shipped config, the tool whose config class reads it, and what it must select
SHIPPED = {
    "caltech101.yaml": (ClsConfig, "caltech101", "resnet18"),
    "cifar10.yaml": (ClsConfig, "cifar10", "resnet18_cifar"),
    "cifar100.yaml": (ClsConfig, "cifar100", "resnet18_cifar"),
    "cifar10_imb10.yaml": (ClsConfig, "cifar10_imbalanced", "resnet18_cifar"),
    "cifar10_imb100.yaml": (ClsConfig, "cifar10_imbalanced", "resnet18_cifar"),
    "camvid.yaml": (SegConfig, "camvid", "deeplabv3plus"),
    "cityscapes.yaml": (SegConfig, "cityscapes", "deeplabv3plus"),
    "cityscapes_drn.yaml": (SegConfig, "cityscapes", "drn_d_22"),
    "demo.yaml": (SegConfig, "cityscapes", "drn_d_22"),
}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _leaves(raw: dict, prefix: str = ""):
    for key, value in raw.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_shipped_config_is_listed():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_loads_with_its_tool_and_keeps_every_value(name):
    cls, dataset, model = SHIPPED[name]
    path = CONFIG_DIR / name
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls) and cfg.data.name == dataset and cfg.model.name == model
    leaves = dict(_leaves(read_yaml(path)))
    assert len(leaves) >= 10
    for dotted, value in leaves.items():  # the file's every value reached the config, none was dropped
        loaded = cfg
        for part in dotted.split("."):
            loaded = getattr(loaded, part)
        assert loaded == value, f"{name}: {dotted} = {value!r} in the file, {loaded!r} loaded"


def test_keys_a_newer_release_added_count_as_unchanged_at_their_defaults():
    from tavaal_seg.core.config import to_dict
    from tavaal_seg.core.loop import config_differences
    from tavaal_seg.segmentation.config import SegConfig

    new = to_dict(SegConfig())
    old = to_dict(SegConfig())
    del old["active"]["max_per_group"], old["active"]["diversity"]  # a config.yaml written before they existed
    assert config_differences(old, new, to_dict(SegConfig())) == []
    new["active"]["diversity"] = "kcenter"
    assert config_differences(old, new, to_dict(SegConfig())) == ["  active.diversity: '<absent>' -> 'kcenter'"]


def test_config_by_name_or_path_from_any_folder(tmp_path, monkeypatch):
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


def test_fast_step_keys_take_their_modes_and_yamls_bare_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  fast_step: off\nvae:\n  fast_step: compile\n")  # YAML reads a bare off as false
    cfg = load_config(ClsConfig, path)
    assert (cfg.train.fast_step, cfg.vae.fast_step) == ("off", "compile")
    assert load_config(ClsConfig, None).train.fast_step == "auto"
    assert load_config(ClsConfig, None, ["device=cuda", "vae.fast_step=graphs"]).vae.fast_step == "graphs"
    with pytest.raises(ConfigError, match="train.fast_step: expected one of auto, compile, graphs, off, got 'fast'"):
        load_config(ClsConfig, None, ["train.fast_step=fast"])
    with pytest.raises(ConfigError, match="vae.fast_step: expected one of auto, compile, graphs, off, got True"):
        load_config(ClsConfig, None, ["vae.fast_step=on"])
    with pytest.raises(ConfigError, match=r"train.fast_step: expected auto, compile or off with device cpu \(CUDA "
                                          r"graphs need a CUDA device\), got 'graphs'"):
        load_config(ClsConfig, None, ["device=cpu", "train.fast_step=graphs"])
