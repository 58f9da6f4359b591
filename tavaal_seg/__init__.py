"""tavaal-seg: TA-VAAL (Task-Aware Variational Adversarial Active Learning, CVPR 2021) for
semantic segmentation and classification. Picks the images to send for labeling next.

The package root is the task-agnostic core's public API (selection with your own model and data,
the strategy registry, the run loop; docs/api.md). The segmentation adapter is
``tavaal_seg.segmentation``, the classification adapter ``tavaal_cls``, the studies
``tavaal_seg.studies``; importing the root loads none of them (nor smp, nor albumentations)."""
from .core import (
    STRATEGIES,
    ActiveLearningRun,
    BaseConfig,
    ConditionalVAE,
    ConfigError,
    Discriminator,
    InMemoryAdapter,
    LossRanker,
    RunState,
    Selection,
    SelectionContext,
    SelectionResult,
    Strategy,
    TappedModule,
    fit_ranker,
    get_strategy,
    load_config,
    register_strategy,
    run_active_learning,
    select,
    tap_layers,
)

__version__ = "0.1.0"
__all__ = ["ActiveLearningRun", "BaseConfig", "ConditionalVAE", "ConfigError", "Discriminator", "InMemoryAdapter",
           "LossRanker", "RunState", "STRATEGIES", "Selection", "SelectionContext", "SelectionResult", "Strategy",
           "TappedModule", "fit_ranker", "get_strategy", "load_config", "register_strategy", "run_active_learning",
           "select", "tap_layers", "__version__"]
