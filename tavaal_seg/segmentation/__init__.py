"""The segmentation adapter: Cityscapes, CamVid and image/mask folders; smp DeepLabV3/V3+ and
DRN-D with feature taps; mIoU; the ``tavaal-seg`` / ``tools/al_seg.py`` command line."""
from ..core.adapter import TaskSpec
from .adapter import SegmentationAdapter
from .cli import make_adapter
from .config import SegConfig
from .data import SEG_DATASETS, write_street_scenes
from .metrics import ConfusionMatrixIoU
from .models import SEG_MODELS, build_seg_model, register_seg_model

TASK = TaskSpec(name="seg", metric_name=SegmentationAdapter.metric_name, datasets=SEG_DATASETS,
                cli="tavaal_seg.segmentation.cli", tool="al_seg.py", config_cls=SegConfig, make_adapter=make_adapter)

__all__ = ["ConfusionMatrixIoU", "SEG_DATASETS", "SEG_MODELS", "SegConfig", "SegmentationAdapter", "TASK",
           "build_seg_model", "register_seg_model", "write_street_scenes"]
