"""dropkit's lab: compare regularizers side by side on real data, store every run, report with figures.

``run(config) -> result`` trains one configuration (``RunConfig``); ``Store`` keeps every run in SQLite;
``expand_grid``/``execute`` run sweeps locally or on Ray; ``write_report`` writes Markdown + static HTML with
figures; ``coadaptation_probe`` is Heuristic Dropout's masking probe; ``lab_configs``/``run_lab`` are ``dropkit lab``.
``find_insertion_points`` finds where methods go in any network; ``load_user_model`` builds ``FILE.py:NAME``.
"""

from dropkit.lab.data import Dataset, generate_organs, load_dataset, load_image_folder, load_npz, read_idx
from dropkit.lab.insertion import InsertionPoints, MethodDoesNotFit, Point, find_insertion_points
from dropkit.lab.models import MLP, ResNet, SignalCNN, SmallCNN, UNet, build_model
from dropkit.lab.probes.coadaptation import coadaptation_probe
from dropkit.lab.report import summarize, write_report
from dropkit.lab.store import Store
from dropkit.lab.suite import lab_configs, run_lab
from dropkit.lab.sweep import execute, expand_grid, load_sweep
from dropkit.lab.config import BASELINE, RunConfig
from dropkit.lab.train import RunFailed, run
from dropkit.lab.user_model import load_user_model

__all__ = [
    "Dataset", "generate_organs", "load_dataset", "load_image_folder", "load_npz", "read_idx",
    "InsertionPoints", "MethodDoesNotFit", "Point", "find_insertion_points",
    "MLP", "ResNet", "SignalCNN", "SmallCNN", "UNet", "build_model", "load_user_model",
    "coadaptation_probe", "summarize", "write_report", "Store",
    "lab_configs", "run_lab", "execute", "expand_grid", "load_sweep",
    "BASELINE", "RunConfig", "RunFailed", "run",
]
