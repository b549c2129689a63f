"""dropkit's lab: compare regularizers side by side on real data, store every run, report with figures.

``run(config) -> result`` trains one configuration (``RunConfig``); ``Store`` keeps every run in SQLite;
``expand_grid``/``execute`` run sweeps locally or on Ray; ``write_report`` writes Markdown + static HTML with
figures; ``coadaptation_probe`` is Heuristic Dropout's masking probe; ``lab_configs``/``run_lab`` are ``dropkit lab``.
``find_insertion_points`` finds where methods go in any network; ``load_user_model`` builds ``FILE.py:NAME``;
``advise`` (``dropkit.lab.advisor``) searches and confirms which regularizer to use.

The names below load on first use: the command line imports ``dropkit.lab.cli`` through this package, and a core
install (without the lab's extras: SciPy, rich, MONAI, matplotlib) must still start it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → the module that defines it
_EXPORTS = {
    **dict.fromkeys(("Dataset", "generate_organs", "load_dataset", "load_image_folder", "load_npz", "read_idx"),
                    "dropkit.lab.data"),
    **dict.fromkeys(("InsertionPoints", "MethodDoesNotFit", "Point", "find_insertion_points"), "dropkit.lab.insertion"),
    **dict.fromkeys(("MLP", "ResNet", "SignalCNN", "SmallCNN", "UNet", "build_model"), "dropkit.lab.models"),
    "load_user_model": "dropkit.lab.user_model",
    **dict.fromkeys(("advise", "Advice"), "dropkit.lab.advisor"),
    "coadaptation_probe": "dropkit.lab.probes.coadaptation",
    **dict.fromkeys(("summarize", "write_report"), "dropkit.lab.report"),
    "Store": "dropkit.lab.store",
    **dict.fromkeys(("lab_configs", "run_lab"), "dropkit.lab.suite"),
    **dict.fromkeys(("execute", "expand_grid", "load_sweep"), "dropkit.lab.sweep"),
    **dict.fromkeys(("BASELINE", "RunConfig"), "dropkit.lab.config"),
    **dict.fromkeys(("RunFailed", "run"), "dropkit.lab.train"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dropkit.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
