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


def test_fast_step_keys_take_their_modes_and_yamls_bare_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  fast_step: off\nvae:\n  fast_step: compile\n")  # YAML reads a bare off as false
    cfg = load_config(ClsConfig, path)
    assert (cfg.train.fast_step, cfg.vae.fast_step) == ("off", "compile")
    assert load_config(ClsConfig, None).train.fast_step == "auto"
    assert load_config(ClsConfig, None, ["device=cuda", "vae.fast_step=graphs"]).vae.fast_step == "graphs"
    with pytest.raises(ConfigError, match="train.fast_step: expected auto, graphs, compile, off, got 'fast'"):
        load_config(ClsConfig, None, ["train.fast_step=fast"])
    with pytest.raises(ConfigError, match="vae.fast_step: expected auto, graphs, compile, off, got True"):
        load_config(ClsConfig, None, ["vae.fast_step=on"])
    with pytest.raises(ConfigError, match=r"train.fast_step: expected auto, compile or off with device cpu \(CUDA "
                                          r"graphs need a CUDA device\), got 'graphs'"):
        load_config(ClsConfig, None, ["device=cpu", "train.fast_step=graphs"])
