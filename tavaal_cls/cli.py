"""``tavaal-cls`` / ``tools/al_cls.py``: TA-VAAL active learning for image classification."""
from __future__ import annotations

from collections.abc import Sequence

from tavaal_seg.core.cli import main as run_main

from .adapter import ClassificationAdapter
from .config import ClsConfig


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, prog="al_cls.py", description=(
        "Active learning for image classification with TA-VAAL and its baselines. "
        "Runs the paper's CIFAR-10/100, imbalanced CIFAR-10 and Caltech101 protocols, or any image folder."),
        config_cls=ClsConfig, default_config="cifar10", make_adapter=ClassificationAdapter)
