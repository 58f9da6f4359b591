"""The task-agnostic TA-VAAL core. Imports nothing from the adapters."""
from .adapter import Pool, TaskAdapter
from .config import BaseConfig, ConfigError
from .validation import load_config
from .loop import ActiveLearningRun, RunDirError, run_active_learning
from .ranker import RANK_LOSSES, LossRanker, rank_loss_bce, rank_loss_margin
from .state import RunState
from .strategies import STRATEGIES, Strategy, get_strategy
from .vae import ConditionalVAE, Discriminator

__all__ = ["ActiveLearningRun", "BaseConfig", "ConditionalVAE", "ConfigError", "Discriminator", "LossRanker", "Pool",
           "RANK_LOSSES", "RunDirError", "RunState", "STRATEGIES", "Strategy", "TaskAdapter", "get_strategy",
           "load_config", "rank_loss_bce", "rank_loss_margin", "run_active_learning"]
