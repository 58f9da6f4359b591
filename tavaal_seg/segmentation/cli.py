"""``tavaal-seg`` / ``tools/al_seg.py``: TA-VAAL active learning for semantic segmentation."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.cli import main as run_main
from ..core.runtime import LOG
from .adapter import SegmentationAdapter
from .config import SegConfig


def make_adapter(cfg: SegConfig, data_root: Path) -> SegmentationAdapter:
    """The adapter; a config with ``data.synthetic_train`` set (the demo) first writes its
    synthetic street scenes to a data root that does not exist yet."""
    d = cfg.data
    if d.synthetic_train is not None and not Path(data_root).exists():
        from .data import write_street_scenes

        size = tuple(d.synthetic_size or [128, 256])
        LOG.info("writing %d + %d SYNTHETIC street scenes (%dx%d) to %s", d.synthetic_train, d.synthetic_val or 0,
                 size[0], size[1], data_root)
        write_street_scenes(data_root, d.synthetic_train, d.synthetic_val or 0, size, seed=0)
    return SegmentationAdapter(cfg, data_root)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(argv, prog="al_seg.py", description=(
        "Active learning for semantic segmentation with TA-VAAL and its baselines. "
        "Runs Cityscapes, CamVid or any image/mask folder; the default config is a CPU demo on "
        "synthetic street scenes."),
        config_cls=SegConfig, default_config="demo", make_adapter=make_adapter, label_csv=False)
