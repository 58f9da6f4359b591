"""--help: every config key with a one-line description, the allowed values of every enumerated
key read from its registry (not a hand-written list), and only the flags a tool can use."""
from __future__ import annotations

import re

import pytest

from tavaal_cls.config import ClsConfig
from tavaal_cls.data import CLS_DATASETS
from tavaal_cls.models import CLS_MODELS
from tavaal_seg.core.cli import build_parser
from tavaal_seg.core.config import allowed_values, walk_keys
from tavaal_seg.core.diversity import DIVERSITY, GROUP_KEYS
from tavaal_seg.core.export import EXPORTERS
from tavaal_seg.core.ranker import RANK_LOSSES
from tavaal_seg.core.strategies import STRATEGIES
from tavaal_seg.core.training import OPTIMIZERS, SCHEDULES
from tavaal_seg.core.vae import RANK_TRANSFORMS
from tavaal_seg.segmentation.config import SegConfig
from tavaal_seg.segmentation.data import SEG_DATASETS
from tavaal_seg.segmentation.models import SEG_MODELS

REGISTRIES = {"active.strategy": STRATEGIES, "train.optimizer": OPTIMIZERS, "train.schedule": SCHEDULES,
              "ranker.loss": RANK_LOSSES, "vae.rank_transform": RANK_TRANSFORMS, "export.formats": EXPORTERS,
              "active.group_by": GROUP_KEYS, "active.diversity": DIVERSITY}


def _help(config_cls: type, label_csv: bool) -> str:
    return build_parser("tool", "", config_cls, "demo", label_csv).format_help()


def _key_text(text: str, key: str) -> str:
    """The --help lines of one config key (its line and its indented description), joined."""
    block = re.split(r"\n  (?! )|\n\n", text.split(f"\n  {key} = ", 1)[1], maxsplit=1)[0]
    return " ".join(block.split())


@pytest.mark.parametrize("config_cls, registries", [
    (SegConfig, {**REGISTRIES, "data.name": SEG_DATASETS, "model.name": SEG_MODELS}),
    (ClsConfig, {**REGISTRIES, "data.name": CLS_DATASETS, "model.name": CLS_MODELS}),
])
def test_every_key_has_a_description_and_enumerated_keys_list_their_registry(config_cls, registries):
    text = _help(config_cls, label_csv=True)
    for key, f, _ in walk_keys(config_cls):
        assert f.metadata.get("help"), f"{key} has no description"
        assert f"  {key} = " in text
    for key, registry in registries.items():
        field = next(f for k, f, _ in walk_keys(config_cls) if k == key)
        assert allowed_values(field) == sorted(registry), key
        assert "one of: " + ", ".join(sorted(registry)) in _key_text(text, key), key
    for key, values in {"labels.mode": "oracle, human", "device": "auto, cpu, cuda"}.items():
        assert "one of: " + values in _key_text(text, key)


def _tool_help(main, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_flags_a_tool_cannot_use_are_not_offered(capsys):
    from tavaal_cls.cli import main as cls_main
    from tavaal_seg.segmentation.cli import main as seg_main

    seg, cls = _tool_help(seg_main, capsys), _tool_help(cls_main, capsys)
    assert "--labels" not in seg and "--labels CSV" in cls
    assert "(camvid, cityscapes, cityscapes_drn, demo; default: demo)" in seg
    assert "(caltech101, cifar10, cifar100, cifar10_imb10, cifar10_imb100; default: cifar10)" in cls
    with pytest.raises(SystemExit) as refused:
        seg_main(["--labels", "x.csv"])
    assert refused.value.code == 2 and "unrecognized arguments: --labels x.csv" in capsys.readouterr().err
