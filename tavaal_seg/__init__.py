"""tavaal-seg: TA-VAAL (Task-Aware Variational Adversarial Active Learning, CVPR 2021) for
semantic segmentation and classification. Picks the images to send for labeling next.

The package root is the task-agnostic core's public API; the adapters live in
``tavaal_seg.segmentation`` and ``tavaal_cls``, the studies in ``tavaal_seg.studies``."""
from .core import (STRATEGIES, ActiveLearningRun, BaseConfig, ConditionalVAE, ConfigError, Discriminator,
                   LossRanker, RunState, get_strategy, load_config, run_active_learning)

__version__ = "0.1.0"
__all__ = ["ActiveLearningRun", "BaseConfig", "ConditionalVAE", "ConfigError", "Discriminator", "LossRanker",
           "RunState", "STRATEGIES", "get_strategy", "load_config", "run_active_learning", "__version__"]
