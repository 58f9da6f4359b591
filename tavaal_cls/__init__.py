"""Classification adapter of tavaal-seg: the TA-VAAL paper's CIFAR-10/100, imbalanced CIFAR-10,
Caltech101 experiments and any image-folder dataset."""
from tavaal_seg.core.adapter import TaskSpec

from .adapter import ClassificationAdapter
from .config import ClsConfig
from .data import CLS_DATASETS, load_dataset
from .models import CLS_MODELS, build_cls_model, register_cls_model

TASK = TaskSpec(name="cls", metric_name=ClassificationAdapter.metric_name, datasets=CLS_DATASETS,
                cli="tavaal_cls.cli", tool="al_cls.py", config_cls=ClsConfig, make_adapter=ClassificationAdapter)

__all__ = ["CLS_DATASETS", "CLS_MODELS", "ClassificationAdapter", "ClsConfig", "TASK", "build_cls_model",
           "load_dataset", "register_cls_model"]
