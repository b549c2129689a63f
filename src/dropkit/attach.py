"""Insert dropkit methods into an existing model without editing its code, and switch them for MC inference.

    >>> handle = dropkit.attach(model, "dropblock", at=["layer3", "layer4"], p=0.1, block_size=5)
    >>> handle.layers            # {"layer3": DropBlock(...), "layer4": DropBlock(...)}
    >>> handle.remove()          # the model is as it was

Activation and stateful methods run as a forward hook on each target (after it, or before it with
``where="before"``) and are registered as a child ``dropkit_<method>`` of the target, so ``model.train()`` /
``model.eval()``, ``model.to()``, ``parameters()`` and ``state_dict()`` all reach them. Wrapper methods
(``dropconnect``) replace the target by the wrapper, which keeps the original layer as ``.layer``; ``remove()``
puts the original back. Block methods are whole layers and cannot be attached.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from typing import Any

from torch import fx, nn

from dropkit.base import DropkitModule
from dropkit.protocol import ProtocolLayer
from dropkit.registry import create, get_card

__all__ = ["attach", "AttachHandle", "AttachAwareTracer", "mc_dropout", "dropkit_layers"]

Target = str | Iterable[str] | Callable[[str, nn.Module], bool]


def dropkit_layers(model: nn.Module, methods: Iterable[str] | None = None) -> list[tuple[str, DropkitModule]]:
    """(name, layer) for every dropkit layer in ``model``, optionally only those of the given method names."""
    wanted = None if methods is None else {get_card(m).name for m in ([methods] if isinstance(methods, str) else methods)}
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, DropkitModule) and (wanted is None or m.method_name in wanted)]


def _resolve_targets(model: nn.Module, at: Target) -> list[str]:
    modules = dict(model.named_modules())
    if callable(at):
        names = [n for n, m in modules.items() if n and not isinstance(m, DropkitModule) and at(n, m)]
        if not names:
            raise ValueError("attach: the predicate given as `at` matched no submodule")
        return names
    if isinstance(at, str):
        names = [at]
    elif isinstance(at, Iterable):
        names = list(at)
    else:
        raise TypeError(f"attach: `at` must be a submodule name, a list of names or a predicate "
                        f"(name, module) -> bool, got {type(at).__name__} {at!r}")
    if not names:
        raise ValueError("attach: `at` is empty; give submodule names as in model.named_modules() or a predicate")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"attach: `at` must hold submodule names (str), got {type(name).__name__} {name!r}")
        if name not in modules or name == "":
            close = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"attach: no submodule named {name!r} in the model{hint}")
    if len(set(names)) != len(names):
        raise ValueError(f"attach: `at` names a submodule twice: {names}")
    return names


class AttachHandle:
    """What ``attach`` inserted: ``layers`` maps each target name to its dropkit layer; ``remove()`` undoes it."""

    def __init__(self, model: nn.Module, method: str) -> None:
        self.model = model
        self.method = method
        self.layers: dict[str, nn.Module] = {}
        self._undo: list[Callable[[], None]] = []

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.layers.clear()

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"AttachHandle(method={self.method!r}, at={list(self.layers)})"


def _child_name(target: nn.Module, method: str) -> str:
    name, i = f"dropkit_{method}", 1
    while hasattr(target, name):
        i += 1
        name = f"dropkit_{method}_{i}"
    return name


def attach(model: nn.Module, name: str, at: Target, *, where: str = "after", **params: Any) -> AttachHandle:
    """Insert method ``name`` at the submodules ``at`` of ``model``.

    Args:
        model: any ``nn.Module``; it is modified in place (reversibly).
        name: a registered method name (``dropkit.methods()``).
        at: a submodule name (as in ``model.named_modules()``), a list of them, or a predicate
            ``(name, module) -> bool`` choosing them.
        where: ``"after"`` (apply to the target's output, the default) or ``"before"`` (to its first input, e.g.
            an input-space method before the first layer). Ignored for wrapper methods.
        **params: passed to ``dropkit.create(name, ...)``; each target gets its own layer.
    """
    card = get_card(name)
    if card.kind == "block":
        raise ValueError(f"attach: {name!r} is a block (a whole layer with the regularizer built in), not something "
                         f"to insert after a module; build it into the model with dropkit.create({name!r}, ...)")
    if where not in ("after", "before"):
        raise ValueError(f"attach: where must be 'after' or 'before', got {where!r}")
    targets = _resolve_targets(model, at)
    handle = AttachHandle(model, name)
    try:
        for target_name in targets:
            if card.kind == "wrapper":
                _attach_wrapper(model, target_name, name, params, handle)
            else:
                _attach_hook(model.get_submodule(target_name), target_name, name, where, params, handle)
    except Exception:
        handle.remove()
        raise
    return handle


def _run_attached_after(child: str, module: nn.Module, args: tuple, output: Any) -> Any:
    return getattr(module, child)(output)


def _run_attached_before(child: str, module: nn.Module, args: tuple) -> tuple:
    return (getattr(module, child)(args[0]), *args[1:])


def _attach_hook(target: nn.Module, target_name: str, name: str, where: str, params: dict, handle: AttachHandle) -> None:
    layer = create(name, **params)
    if isinstance(layer, DropkitModule):
        layer.attached_to(target, where)
    child = _child_name(target, name)
    target.add_module(child, layer)
    # The hook finds the layer by name on the module it runs on (no closure over the layer), so a deep copy of
    # the model (EMA, dropkit.slim) runs its own copy of the layer, and replacing the child replaces the method.
    if where == "after":
        hook = target.register_forward_hook(functools.partial(_run_attached_after, child))
    else:
        hook = target.register_forward_pre_hook(functools.partial(_run_attached_before, child))
    # Recorded for tracers (torch.fx does not run hooks): see AttachAwareTracer.
    attached = target.__dict__.setdefault("_dropkit_attached", {})
    attached[child] = where

    def undo() -> None:
        hook.remove()
        attached.pop(child, None)
        delattr(target, child)

    handle._undo.append(undo)
    handle.layers[target_name] = layer


def _attach_wrapper(model: nn.Module, target_name: str, name: str, params: dict, handle: AttachHandle) -> None:
    parent_name, _, attr = target_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    original = getattr(parent, attr)
    wrapper = create(name, layer=original, **params)
    setattr(parent, attr, wrapper)
    handle._undo.append(lambda: setattr(parent, attr, original))
    handle.layers[target_name] = wrapper


class AttachAwareTracer(fx.Tracer):
    """A ``torch.fx`` tracer that sees attached methods: fx skips forward hooks, so it puts each attached layer's
    call into the graph where its hook would run (dropkit layers are leaves, kept as ``call_module`` nodes)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, DropkitModule) or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        attached = m.__dict__.get("_dropkit_attached", {})
        for child, where in attached.items():
            if where == "before":
                layer = getattr(m, child)
                args = (super().call_module(layer, layer.forward, (args[0],), {}), *args[1:])
        out = super().call_module(m, forward, args, kwargs)
        for child, where in attached.items():
            if where == "after":
                layer = getattr(m, child)
                out = super().call_module(layer, layer.forward, (out,), {})
        return out


class mc_dropout:  # noqa: N801 — used like a function: `dropkit.mc_dropout(model)` or `with dropkit.mc_dropout(model):`
    """Keep dropkit layers sampling while the rest of the model is in eval mode (Monte-Carlo dropout).

    Takes effect at once; as a context manager it restores every layer's previous mode on exit. BatchNorm and
    every other module keep their own mode. ``model.eval()`` called afterwards switches the layers off again.

    Args:
        model: the model.
        enabled: True to sample at inference, False to switch the layers back to eval.
        include_torch: also switch ``torch.nn`` dropout modules (``nn.Dropout``, ``nn.Dropout2d``, ...).
    """

    def __init__(self, model: nn.Module, enabled: bool = True, include_torch: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"mc_dropout: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(enabled, bool):
            raise TypeError(f"mc_dropout: enabled must be True or False, got {enabled!r}")
        torch_dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
        self._saved = []
        self._phases = []
        for module in model.modules():
            if isinstance(module, DropkitModule) or (include_torch and isinstance(module, torch_dropouts)):
                self._saved += [(m, m.training) for m in module.modules()]
                self._phases += [(m, m.protocol_phase) for m in module.modules() if isinstance(m, ProtocolLayer)]
                module.train(enabled)
                # Sampling at inference is not training: layers that gather training statistics must not count it.
                for m in module.modules():
                    if isinstance(m, ProtocolLayer) and enabled:
                        m.protocol_phase = "inference"

    def restore(self) -> None:
        for module, mode in self._saved:
            module.training = mode
        for module, phase in self._phases:
            module.protocol_phase = phase
        self._saved = []
        self._phases = []

    def __enter__(self) -> mc_dropout:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
