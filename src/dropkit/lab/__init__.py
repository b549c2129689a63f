"""dropkit's lab: compare regularizers side by side on real data, store every run, report with figures.

``run(config) -> result`` trains one configuration (``RunConfig``); ``Store`` keeps every run in SQLite;
``expand_grid``/``execute`` run sweeps locally or on Ray; ``write_report`` writes Markdown + static HTML with
figures; ``coadaptation_probe`` is Heuristic Dropout's masking probe; ``lab_configs``/``run_lab`` are ``dropkit lab``.
"""

from dropkit.lab.data import Dataset, generate_organs, load_dataset, load_npz, read_idx
from dropkit.lab.models import MLP, ResNet, SmallCNN, UNet, build_model
from dropkit.lab.probes.coadaptation import coadaptation_probe
from dropkit.lab.report import summarize, write_report
from dropkit.lab.store import Store
from dropkit.lab.suite import lab_configs, run_lab
from dropkit.lab.sweep import execute, expand_grid, load_sweep
from dropkit.lab.config import BASELINE, RunConfig
from dropkit.lab.train import RunFailed, run

__all__ = [
    "Dataset", "generate_organs", "load_dataset", "load_npz", "read_idx",
    "MLP", "ResNet", "SmallCNN", "UNet", "build_model",
    "coadaptation_probe", "summarize", "write_report", "Store",
    "lab_configs", "run_lab", "execute", "expand_grid", "load_sweep",
    "BASELINE", "RunConfig", "RunFailed", "run",
]
