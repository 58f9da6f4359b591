"""The task-agnostic TA-VAAL core. Imports nothing from the adapters."""
from .adapter import Pool, TaskAdapter
from .api import SelectionResult, TappedModule, fit_ranker, select, tap_layers
from .config import BaseConfig, ConfigError
from .loop import ActiveLearningRun, RunDirError, run_active_learning
from .memory import InMemoryAdapter
from .ranker import RANK_LOSSES, LossRanker, rank_loss_bce, rank_loss_margin
from .registry import Registry
from .state import RunState
from .strategies import STRATEGIES, Selection, SelectionContext, Strategy, get_strategy, register_strategy
from .vae import ConditionalVAE, Discriminator
from .validation import load_config

__all__ = ["ActiveLearningRun", "BaseConfig", "ConditionalVAE", "ConfigError", "Discriminator", "InMemoryAdapter",
           "LossRanker", "Pool", "RANK_LOSSES", "Registry", "RunDirError", "RunState", "STRATEGIES", "Selection",
           "SelectionContext", "SelectionResult", "Strategy", "TappedModule", "TaskAdapter", "fit_ranker",
           "get_strategy", "load_config", "rank_loss_bce", "rank_loss_margin", "register_strategy",
           "run_active_learning", "select", "tap_layers"]
