"""``dropkit lab``: the default comparison — every registered activation method against the no-dropout baseline,
several seeds, into a store, then the report.

The classification suite starts from the pilot's configuration B (``shared/lab-pilot.md``), where regularizers
measurably helped on 2 CPU cores: Fashion-MNIST with a fixed stratified 1 000-image training subset and a 5 000-image
test subset, no augmentation, the BatchNorm-free small CNN, SGD (Nesterov momentum 0.9, lr 0.02, cosine decay per
step, batch 64, no weight decay), methods at the papers' placements — structured methods at the last two conv stages
with p = 0.2 (the pilot's rate), element-wise methods before the classifier with the card's rate (dropout 0.5).

Budget (≤ 10 min on 2 cores), measured here (2 cores, torch 2.13 CPU, nothing else running): with 15 epochs the
48 runs (16 arms × 3 seeds) took 11.7 min with two 1-thread worker processes (about 28 s a run, of which about 9 s
is evaluation: the 250-image validation split every epoch, 5 000 test images, the training set in eval mode, the
probe). The default is therefore 10 epochs (the cosine schedule stretched over 160 SGD steps) and a probe on 500
test images. The lab prints the plan before it starts; ``--methods`` narrows it (the baseline stays an arm),
``--seeds 5`` (the pilot's minimum for half-point effects) resumes from the store and adds the missing seeds,
``--epochs 30`` is the pilot's full length (a new set of runs: the epochs are part of each run's config).

The segmentation suite (``--suite segmentation``) trains the U-Net on the generated ``organs`` set (24 training
images of 64×64, 3 classes) with Adam 1e-3, CE + Dice loss, methods between the two convolutions of every stage at
p = 0.1, and reports Dice and IoU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropkit.lab.report import summary_table, write_report
from dropkit.lab.store import Store
from dropkit.lab.sweep import execute, method_names
from dropkit.lab.config import BASELINE, RunConfig

__all__ = ["SUITES", "QUICK", "lab_configs", "run_lab"]

SUITES: dict[str, dict[str, Any]] = {
    "classification": {
        "seeds": 3,
        "run": dict(data="fashion_mnist", model="cnn", train_size=1000, val_size=250, test_size=5000, epochs=10,
                    batch_size=64, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=0.0, lr_schedule="cosine",
                    group_params={"conv": {"p": 0.2}},
                    probe={"fractions": [0.0, 0.25, 0.5], "repeats": 1, "images": 500}),
    },
    "segmentation": {
        "seeds": 3,
        "run": dict(data="organs", model="unet", train_size=24, val_size=8, epochs=40, batch_size=4,
                    optimizer="adam", lr=1e-3, momentum=0.0, weight_decay=0.0, lr_schedule="cosine",
                    group_params={"conv": {"p": 0.1}},
                    probe={"fractions": [0.0, 0.25, 0.5, 0.75], "repeats": 2, "images": 64}),
    },
}

# The block regularizers (``maxout``, ``stochastic_pooling``, ``standout``) replace layers instead of being inserted
# after one, so they are compared as model variants against the plain model: the CNN for maxout and stochastic
# pooling, the MLP (one hidden layer of 512) for maxout and Standout. Same data and training as classification.
BLOCK_ARMS = {"cnn": ("maxout", "stochastic_pooling"), "mlp": ("maxout", "standout")}
SUITES["blocks"] = {"seeds": 3, "run": {**SUITES["classification"]["run"], "probe": None}}

#: ``--quick``: a seconds-long smoke run of the same pipeline (numbers meaningless)
QUICK: dict[str, dict[str, Any]] = {
    "classification": {"seeds": 2, "run": dict(train_size=200, val_size=100, test_size=500, epochs=2,
                                               probe={"fractions": [0.0, 0.5], "repeats": 1, "images": 200})},
    "blocks": {"seeds": 2, "run": dict(train_size=200, val_size=100, test_size=500, epochs=2)},
    "segmentation": {"seeds": 2, "run": dict(train_size=8, val_size=4, epochs=2,
                                             probe={"fractions": [0.0, 0.5], "repeats": 1, "images": 16})},
}


def lab_configs(suite: str = "classification", *, quick: bool = False, methods: str | Sequence[str] = "activation",
                seeds: int | Sequence[int] | None = None, overrides: dict[str, Any] | None = None,
                probe: bool = True) -> list[RunConfig]:
    """The lab's run configs, seed-major (a stopped lab holds complete paired sets for its first seeds)."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    settings = dict(SUITES[suite]["run"])
    n_seeds = SUITES[suite]["seeds"]
    if quick:
        settings.update(QUICK[suite]["run"])
        n_seeds = QUICK[suite]["seeds"]
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if not probe:
        settings["probe"] = None
    if seeds is None:
        seeds = n_seeds
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be ≥ 1, got {seeds}")
        seed_list = list(range(seeds))
    else:
        seed_list = list(seeds)
    if suite == "blocks":
        arms = [(model, variant) for model, variants in BLOCK_ARMS.items() for variant in (None, *variants)]
        return [RunConfig.from_dict({**settings, "model": model, "variant": variant, "method": "none", "seed": s,
                                     "model_params": {"hidden": (512,)} if model == "mlp" else {}})
                for s in seed_list for model, variant in arms]
    # The baseline is always an arm, first: without it every row of the report reads "no baseline".
    names = [BASELINE] + [m for m in method_names(methods) if m != BASELINE]
    return [RunConfig.from_dict({**settings, "method": m, "seed": s}) for s in seed_list for m in names]


def run_lab(configs: Sequence[RunConfig], *, db: str | Path, out: str | Path, backend: str = "local",
            ray_address: str | None = None, progress: bool = True, report: bool = True,
            title: str = "dropkit lab", workers: int = 1) -> dict[str, Any]:
    """Run (or resume) the configs into ``db``, then write the report of those runs to ``out``."""
    started = time.perf_counter()
    with Store(db) as store:
        counts = execute(configs, store, backend=backend, ray_address=ray_address, progress=progress, tag="lab",
                         workers=workers)
        wall = time.perf_counter() - started
        result: dict[str, Any] = {"counts": counts, "wall_s": wall, "report": None, "tables": []}
        if report:
            note = (f"This invocation ran {counts['done']} run(s) ({counts['failed']} failed, {counts['skipped']} "
                    f"already in the store) in {wall / 60:.1f} min of wall time.")
            rep = write_report(store, out, title=title, wall_note=note)
            result["report"] = rep["index"]
            result["markdown"] = rep["markdown"]
            hashes = {c.config_hash() for c in configs}
            runs = [r for r in store.runs() if r["config_hash"] in hashes]
            from dropkit.lab.report import summarize

            result["tables"] = [summary_table(c) for c in summarize(runs)]
    return result
