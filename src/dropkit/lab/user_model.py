"""Your own network in the lab: ``FILE.py:NAME`` names a function or an ``nn.Module`` subclass in a Python file.

NAME is called with whichever of ``in_channels``, ``num_classes`` and ``input_shape`` (one input's shape without
the batch dimension: (C, H, W), (C, L) or (F,)) its signature declares, plus the run's ``model_params``; it must
return a fresh ``nn.Module`` that maps a batch (N, *input_shape) to logits (N, num_classes) (segmentation:
(N, num_classes, H, W)). For example, ``my_net.py``::

    def build(in_channels, num_classes):
        return nn.Sequential(nn.Conv2d(in_channels, 16, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(num_classes))

and ``dropkit run --model my_net.py:build …``. Where a method goes is found automatically
(``dropkit.lab.insertion``) unless the module sets ``insertion_points`` as the lab's models do.

The file is executed as a module (its folder first on ``sys.path``, so it may import its neighbours) once per
process and change of the file; a ready module *instance* is refused, because every run needs fresh weights.
Checking a spec's form (``parse_user_model_spec``) loads neither the file nor torch, so a config can be checked
cheaply. A run's identity (``RunConfig.config_hash``) includes the file's SHA-256 (``user_model_digest``): an
edited network is a new run, not one the store has "already done" (modules the file imports are not hashed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["USER_MODEL_ARGS", "is_user_model_spec", "parse_user_model_spec", "user_model_digest", "load_user_model"]

#: what dropkit offers a user's model builder; it receives those its signature names
USER_MODEL_ARGS = ("in_channels", "num_classes", "input_shape")
_MODULES: dict[tuple[str, int, int], ModuleType] = {}


def is_user_model_spec(spec: Any) -> bool:
    """Whether ``spec`` is meant as ``FILE.py:NAME`` (rather than a built-in model name)."""
    return isinstance(spec, str) and ".py:" in spec


def parse_user_model_spec(spec: str) -> tuple[Path, str]:
    """``"path/to/file.py:NAME"`` → (path, NAME), checked for form and for the file's existence.

    Raises:
        ValueError: not of the form ``FILE.py:NAME`` with NAME a Python identifier.
        FileNotFoundError: no such file.
    """
    if not isinstance(spec, str):
        raise TypeError(f"a user model must be given as 'FILE.py:NAME', got {spec!r}")
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise ValueError(f"a user model must be given as 'FILE.py:NAME' (NAME a function or nn.Module subclass "
                         f"in that file), got {spec!r}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"model file {path!r} (from {spec!r}) does not exist")
    return file, name


def user_model_digest(spec: str) -> str:
    """SHA-256 of the file ``spec`` names (what a run's identity should depend on; modules it imports are not
    included)."""
    file, _ = parse_user_model_spec(spec)
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _import_file(file: Path) -> ModuleType:
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MODULES:
        # A name of its own per file, so two files both called model.py do not replace each other in sys.modules.
        mod_name = f"dropkit_user_model_{hashlib.sha1(key[0].encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise ValueError(f"{file}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        folder = str(file.resolve().parent)
        sys.path.insert(0, folder)
        sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(mod_name, None)
            raise
        finally:
            sys.path.remove(folder)
        _MODULES[key] = module
    return _MODULES[key]


def _builders(module: ModuleType) -> list[str]:
    """The names in ``module`` that could be NAME: functions and nn.Module subclasses defined there."""
    from torch import nn

    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
                  == module.__name__ and (inspect.isfunction(v) or (inspect.isclass(v) and issubclass(v, nn.Module))))


def load_user_model(spec: str, *, in_channels: int, num_classes: int, input_shape: tuple[int, ...],
                    **options: Any) -> nn.Module:
    """Build the model ``spec`` (``FILE.py:NAME``) names for this data.

    Args:
        spec: ``FILE.py:NAME``.
        in_channels, num_classes, input_shape: offered to NAME; it receives those its signature declares (all of
            them when it takes ``**kwargs``).
        **options: the run's ``model_params``, passed as keyword arguments (NAME must accept each).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad form, no NAME in the file, NAME needs an argument dropkit cannot give, or an option it
            does not take.
        TypeError: NAME is neither a callable nor an ``nn.Module`` subclass, is a module instance, or returns
            something other than an ``nn.Module``.
    """
    from torch import nn

    file, name = parse_user_model_spec(spec)
    module = _import_file(file)
    if not hasattr(module, name):
        found = _builders(module)
        raise ValueError(f"{file} has no {name!r}; functions and nn.Module classes defined there: "
                         f"{found or 'none'}")
    target = getattr(module, name)
    if isinstance(target, nn.Module):
        raise TypeError(f"{spec} is an nn.Module instance; give a function or an nn.Module subclass that builds a "
                        "fresh model (each run needs its own initial weights)")
    if not callable(target):
        raise TypeError(f"{spec} is an object of type {type(target).__name__}, not a function or an nn.Module subclass")
    offered = {"in_channels": int(in_channels), "num_classes": int(num_classes),
               "input_shape": tuple(int(s) for s in input_shape)}
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: offer nothing but the options
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                         inspect.Parameter.KEYWORD_ONLY)}
    refused = sorted(set(options) - named) if not takes_any else []
    if refused:
        raise ValueError(f"{spec} does not take the model parameter(s) {refused}; its parameters: {sorted(named)}")
    kwargs = {k: v for k, v in offered.items() if takes_any or k in named}
    kwargs.update(options)
    unfilled = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if unfilled:
        raise ValueError(f"{spec} needs {unfilled}, which dropkit cannot give: it offers {list(USER_MODEL_ARGS)} "
                         "and the run's model_params; give the others defaults or pass them as model_params")
    model = target(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model
