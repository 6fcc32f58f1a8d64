"""Architecture search over a spec's ``search:`` block, with Optuna (issue 7).

``SearchSpace`` samples plain trial specs (space.py); ``open_storage``/``make_study`` hold
the study in a journal file or an RDB (study.py); workers train trials and survive killed
peers (worker.py, resume.py); a resumed study keeps its trials comparable (budget.py);
``write_report`` writes the table, best spec, plots and JSON (report.py). Imports no torch
until a trial trains.
"""
from .report import write_report as write_report
from .space import SearchSpace as SearchSpace, TrialSpec as TrialSpec
from .study import SearchError as SearchError, load_study as load_study, open_storage as open_storage
from .worker import SearchRun as SearchRun, dry_run as dry_run, run_worker as run_worker, run_workers as run_workers
