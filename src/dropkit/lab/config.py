"""What determines a lab run: ``RunConfig`` and the lab's option tuples, each defined here once.

No torch here: the report, the sweep file reader and the command line read these constants without loading the
trainer. Method names are checked against the registry when a config is validated (``dropkit.get_card``); the
method kinds and taxonomy axes live in ``dropkit.registry`` with the cards they describe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dropkit.lab.user_model import is_user_model_spec, parse_user_model_spec, user_model_digest

__all__ = [
    "BASELINE", "OPTIMIZERS", "LR_SCHEDULES", "MODEL_NAMES", "VARIANTS", "PREPROCESSING", "DEVICES",
    "PROBE_FRACTIONS", "DEFAULT_PROBE", "PLACEMENT_GROUPS", "WHERE", "RunConfig", "check_probe", "json_safe",
    "parse_point", "primary_metric",
]

#: the no-dropout arm every method is compared against
BASELINE = "none"
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "constant")
#: the lab's built-in models (``dropkit.lab.models.MODELS`` builds them)
MODEL_NAMES = ("cnn", "cnn1d", "resnet", "mlp", "edge_mlp", "unet")
#: block regularizers built into a model instead of the layer they replace, per model (None: the plain model)
VARIANTS: Mapping[str, tuple[str | None, ...]] = {"cnn": (None, "maxout", "stochastic_pooling"),
                                                 "mlp": (None, "maxout", "standout")}
#: image preprocessing before normalisation (``"edges"``: the dental recipe's edge maps)
PREPROCESSING = (None, "edges")
#: device names besides ``"cuda:N"``
DEVICES = ("auto", "cpu", "cuda")
#: groups of a model's insertion points (``model.insertion_points``)
PLACEMENT_GROUPS = ("conv", "fc", "branch", "input")
#: where an explicit point acts, as ``dropkit.attach(where=...)``: ``NAME`` is after submodule NAME (its output),
#: ``NAME:in`` before it (its input); ``NAME:out`` is the same as ``NAME``
WHERE = ("after", "before")
#: masked fractions of the co-adaptation probe (Heuristic Dropout, Fig. 4)
PROBE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
#: the co-adaptation probe's settings when asked for without details
DEFAULT_PROBE: Mapping[str, Any] = {"fractions": list(PROBE_FRACTIONS), "repeats": 3, "images": 1000}


def primary_metric(task: str) -> str:
    """The metric runs are compared on: accuracy for classification, Dice for segmentation."""
    return "acc" if task == "classification" else "dice"




def parse_point(text: str) -> tuple[str, str]:
    """``"NAME"`` or ``"NAME:out"`` → (NAME, "after"); ``"NAME:in"`` → (NAME, "before")."""
    if not isinstance(text, str) or not text or text in (":in", ":out"):
        raise ValueError(f"a point must be 'NAME' (after the submodule), 'NAME:in' (before it) or 'NAME:out', "
                         f"got {text!r}")
    name, sep, suffix = text.rpartition(":")
    if not sep:
        return text, "after"
    if suffix in ("in", "out"):
        return name, "before" if suffix == "in" else "after"
    raise ValueError(f"a point must be 'NAME', 'NAME:in' or 'NAME:out'; {text!r} ends in ':{suffix}'")


def json_safe(value: Any) -> Any:
    """``value`` with mappings and sequences made JSON-ready and anything else unknown as its ``repr``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


@dataclass
class RunConfig:
    """Everything that determines a run. Its canonical JSON is hashed (``config_hash``) to key the store.

    Attributes:
        method: a registered method name, or ``"none"`` for the no-dropout baseline.
        params: the method's parameters (the card's defaults fill the rest).
        placement: a group of the model's insertion points (``"conv"``, ``"fc"``, ``"branch"``, ``"input"``), an
            explicit list of points (``"NAME"``: after submodule NAME, its output; ``"NAME:in"``: before it, its
            input), or None for the paper's placement (found automatically for a model without
            ``insertion_points``: ``dropkit.lab.insertion``).
        group_params: default parameters per placement group, used where ``params`` and the card allow, e.g.
            ``{"conv": {"p": 0.2}}`` (the pilot's rate at the conv stages).
        data: ``"fashion_mnist"``, ``"organs"``, an ``.npz`` path or a folder.
        train_size, val_size, test_size, data_seed: the splits (see ``dropkit.lab.data.load_dataset``).
        preprocess: None or ``"edges"`` (the dental-imaging recipe's edge maps, before normalisation).
        model, model_params: one of ``cnn``, ``cnn1d`` (signals), ``resnet``, ``mlp`` (any input), ``edge_mlp``,
            ``unet``, or ``FILE.py:NAME`` (your own: ``dropkit.lab.user_model``), and its keyword arguments.
        variant: a block regularizer built into the model instead of the layer it replaces (``"maxout"``,
            ``"stochastic_pooling"`` for the CNN; ``"maxout"``, ``"standout"`` for the MLP); compared against the
            plain model as an arm of its own.
        seed: initial weights, batch order and masks.
        epochs, batch_size, optimizer, lr, momentum, weight_decay, lr_schedule: training (SGD is Nesterov; the
            cosine schedule decays per step to 0).
        test_every: also evaluate the test split every k epochs (0: after the last epoch only).
        probe: co-adaptation probe after training: ``{"fractions": [...], "repeats": r, "images": n}`` or None.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        also: more methods inserted besides ``method`` (a cocktail), each ``{"method": name, "params": {...},
            "placement": group or list of points}`` (as ``placement``; None: the method's own place).
    """

    method: str = BASELINE
    params: dict[str, Any] = field(default_factory=dict)
    placement: str | list[str] | None = None
    group_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: str = "fashion_mnist"
    train_size: int | None = 1000
    val_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    preprocess: str | None = None
    model: str = "cnn"
    variant: str | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    test_every: int = 0
    probe: dict[str, Any] | None = None
    device: str = "auto"
    also: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        if not isinstance(values, Mapping):
            raise TypeError(f"a run config must be a table/mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(f"unknown run setting(s) {unknown}; allowed: {cls.fields()}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    def config_hash(self) -> str:
        values = self.to_dict()
        for name, default in LATER_FIELDS.items():  # stores written before these fields existed keep matching
            if values.get(name) == default:
                values.pop(name)
        if is_user_model_spec(self.model):
            # the spec names a file: hash what it holds, so an edited network is a new run, not "already done"
            values["model_source"] = user_model_digest(self.model)
        blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> None:
        def need_int(name: str, minimum: int, *, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an integer ≥ {minimum}{' or None' if optional else ''}, got {v!r}")
            if v < minimum:
                raise ValueError(f"{name} must be an integer ≥ {minimum}, got {v}")

        def need_real(name: str, *, positive: bool) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
            if v < 0 or (positive and v == 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '≥ 0'}, got {v}")

        if not isinstance(self.method, str):
            raise TypeError(f"method must be a method name or {BASELINE!r}, got {self.method!r}")
        if self.method != BASELINE:
            import dropkit

            dropkit.get_card(self.method)  # ValueError with the closest names
        for name in ("params", "model_params", "group_params"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a table/mapping, got {getattr(self, name)!r}")
        for group, values in self.group_params.items():
            if not isinstance(values, Mapping):
                raise TypeError(f"group_params[{group!r}] must be a table/mapping, got {values!r}")
        if self.method == BASELINE and self.params:
            raise ValueError(f"the baseline {BASELINE!r} takes no params, got {dict(self.params)}")
        if self.placement is not None and not isinstance(self.placement, (str, list)):
            raise TypeError(f"placement must be a group name, a list of points ('NAME' after a submodule, "
                            f"'NAME:in' before it) or None, got {self.placement!r}")
        if isinstance(self.placement, list):
            for point in self.placement:
                parse_point(point)
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"data must be a dataset name or a path, got {self.data!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {self.preprocess!r}")
        if is_user_model_spec(self.model):
            parse_user_model_spec(self.model)  # form and file checked now; the file runs when the model is built
        elif self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {sorted(MODEL_NAMES)} or FILE.py:NAME (your own), "
                             f"got {self.model!r}")
        if self.variant not in VARIANTS.get(self.model, (None,)):
            raise ValueError(f"variant for model {self.model!r} must be one of {VARIANTS.get(self.model, (None,))}, "
                             f"got {self.variant!r}")
        need_int("train_size", 1, optional=True)
        need_int("val_size", 0, optional=True)
        need_int("test_size", 1, optional=True)
        need_int("data_seed", 0)
        need_int("seed", 0)
        need_int("epochs", 1)
        need_int("batch_size", 1)
        need_int("test_every", 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        need_real("lr", positive=True)
        need_real("momentum", positive=False)
        need_real("weight_decay", positive=False)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not isinstance(self.device, str) or not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.probe is not None:
            check_probe(self.probe)
        check_also(self.also, self.method)


#: fields added after the store's first schema, with their defaults (left out of the hash when at the default)
LATER_FIELDS: dict[str, Any] = {"also": []}
_ALSO_KEYS = ("method", "params", "placement")


def check_also(also: Any, method: str) -> None:
    """Raise if ``also`` is not a list of ``{"method", "params", "placement"}`` tables of distinct methods."""
    if not isinstance(also, list):
        raise TypeError(f"also must be a list of {{method, params, placement}} tables, got {also!r}")
    if also and method == BASELINE:
        raise ValueError(f"also: the baseline {BASELINE!r} takes no further methods; put the first one in method")
    seen = {method}
    for i, entry in enumerate(also):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("method"), str):
            raise TypeError(f"also[{i}] must be a table with a method name, got {entry!r}")
        unknown = sorted(set(entry) - set(_ALSO_KEYS))
        if unknown:
            raise ValueError(f"also[{i}]: unknown key(s) {unknown}; allowed: {list(_ALSO_KEYS)}")
        import dropkit

        dropkit.get_card(entry["method"])  # ValueError with the closest names
        if entry["method"] in seen:
            raise ValueError(f"also[{i}]: method {entry['method']!r} is already in this run; each method once")
        seen.add(entry["method"])
        if not isinstance(entry.get("params", {}), Mapping):
            raise TypeError(f"also[{i}].params must be a table, got {entry.get('params')!r}")
        placement = entry.get("placement")
        if placement is not None and not isinstance(placement, (str, list)):
            raise TypeError(f"also[{i}].placement must be a group name, a list of points or None, got {placement!r}")
        for point in placement if isinstance(placement, list) else []:
            parse_point(point)


def check_probe(probe: Any) -> None:
    """Raise if ``probe`` is not ``{"fractions": [...], "repeats": r, "images": n}`` (keys optional)."""
    if not isinstance(probe, Mapping):
        raise TypeError(f"probe must be a table with fractions, repeats, images; got {probe!r}")
    unknown = sorted(set(probe) - set(DEFAULT_PROBE))
    if unknown:
        raise ValueError(f"probe: unknown key(s) {unknown}; allowed: fractions, repeats, images")
    fractions = probe.get("fractions", [])
    if (not isinstance(fractions, (list, tuple)) or not fractions
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1 for f in fractions)):
        raise ValueError(f"probe.fractions must be a non-empty list of numbers in [0, 1), got {fractions!r}")
    for key in ("repeats", "images"):
        v = probe.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"probe.{key} must be an integer ≥ 1, got {v!r}")
