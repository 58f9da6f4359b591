"""Classification adapter of tavaal-seg: the TA-VAAL paper's CIFAR-10/100, imbalanced CIFAR-10,
Caltech101 experiments and any image-folder dataset."""
from .adapter import ClassificationAdapter
from .config import ClsConfig
from .data import CLS_DATASETS, load_dataset
from .models import CLS_MODELS, build_cls_model

__all__ = ["ClassificationAdapter", "ClsConfig", "CLS_DATASETS", "CLS_MODELS", "build_cls_model", "load_dataset"]
