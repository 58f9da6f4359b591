"""Label-efficiency studies: every (strategy, seed) run of one experiment, their aggregate,
and the TA-VAAL paper's figures (``tools/run_study.py``, ``tools/plot_curves.py``)."""
from .cli import plot_main, run_study_main
from .layout import StudyError, discover_runs, run_path, run_phase
from .plots import plot_study
from .runner import prepare_study, requested_active, requested_setting
from .summary import Summary, aggregate, write_summary

__all__ = ["StudyError", "Summary", "aggregate", "discover_runs", "plot_main", "plot_study", "prepare_study",
           "requested_active", "requested_setting", "run_path", "run_phase", "run_study_main", "write_summary"]
