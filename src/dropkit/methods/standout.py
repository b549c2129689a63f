"""Standout, or adaptive dropout (Ba & Frey, NIPS 2013): a Linear layer whose keep probabilities come from its input.

Page: ``docs/methods/standout.md``. A binary belief ("standout") network overlays the layer:
unit j of a sample is kept with probability π_j = σ(Σ_i ω_ji a_i + b'_j), computed from the *same* input a. With
the weight tying used in practice, ω = α·W and b' = α·b + β, i.e. π = σ(α·(Wa + b) + β) with two scalars α, β:

    training:   h = m ⊙ f(Wa + b),  m_j ~ Bernoulli(π_j) per sample; no gradient flows through the sample
                (the mask is a constant of the backward pass, so W learns through f only);
    inference:  h = π ⊙ f(Wa + b), the expectation of the training output.

Defaults α = 1, β = 0 (the common choice) and f = ReLU (a library choice); the paper also uses sigmoid units
(``activation="sigmoid"``).

Why an ``nn.Module`` and not a ``DropkitModule``: Standout has no drop probability to set. Its keep probability is
computed per sample and unit from the input, so a layer-wide ``p`` would either be ignored or become a second knob
fighting σ(α·z + β); α and β are the method's real parameters (β < 0 drops more, β > 0 less). Its eval mode is not
the identity either (it multiplies by π), so it is a whole layer (``kind="block"``) that replaces a Linear + its
activation in a model, not an activation method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import check_bool, check_choice, check_float_tensor, check_generator, check_positive_int, check_real

__all__ = ["standout", "Standout"]

_NAME = "standout"

_ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda z: z}


def standout(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    activation: str = "relu",
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standout layer with tied weights.

    Args:
        x: (N, *, in_features).
        weight: (out_features, in_features); bias: (out_features,) or None.
        alpha, beta: the standout network is σ(α·(xWᵀ + b) + β).
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"identity"`` (f).
        training: sample m ~ Bernoulli(π) when True; return π ⊙ f(z) when False.
        generator: optional generator for the mask.

    Returns:
        (N, *, out_features).
    """
    method = _NAME
    check_float_tensor(x, method)
    if x.ndim < 1 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"{method}: input must end in in_features={weight.shape[-1]}, got shape {tuple(x.shape)}")
    alpha = check_real(alpha, "alpha", method)
    beta = check_real(beta, "beta", method)
    check_choice(activation, "activation", method, tuple(_ACTIVATIONS))
    generator = check_generator(generator, x, method)
    z = F.linear(x, weight, bias)
    h = _ACTIVATIONS[activation](z)
    if not training:
        return torch.sigmoid(alpha * z + beta) * h
    with torch.no_grad():
        keep_prob = torch.sigmoid(alpha * z.float() + beta)
        mask = (sample_uniform(z.shape, z, generator) < keep_prob).to(h.dtype)
    return h * mask


@register(
    _NAME,
    family="related",
    kind="block",
    paper="Ba & Frey, \"Adaptive dropout for training deep neural networks\", NIPS 2013",
    summary="a Linear layer whose units are kept with probability sigmoid(alpha*(Wx+b)+beta) computed from the "
            "same input; sampled in training, the expectation pi*f(Wx+b) at eval",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "element", "phase": "train+test", "generality": "generic"},
)
class Standout(nn.Module):
    """A Linear layer + activation with a tied standout network (see the module docstring).

    Args:
        in_features, out_features: as ``nn.Linear``.
        alpha: scale of the standout pre-activation (default 1).
        beta: offset of the standout pre-activation (default 0).
        activation: f, ``"relu"`` (default), ``"sigmoid"``, ``"tanh"`` or ``"identity"``.
        bias: whether the Linear layer has a bias (default True).
        generator: optional ``torch.Generator`` for the masks.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        alpha: float = 1.0,
        beta: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_features = check_positive_int(in_features, "in_features", self.method_name)
        out_features = check_positive_int(out_features, "out_features", self.method_name)
        self.alpha = check_real(alpha, "alpha", self.method_name)
        self.beta = check_real(beta, "beta", self.method_name)
        self.activation = check_choice(activation, "activation", self.method_name, tuple(_ACTIVATIONS))
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"standout: generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.linear = nn.Linear(in_features, out_features, bias=check_bool(bias, "bias", self.method_name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standout(x, self.linear.weight, self.linear.bias, alpha=self.alpha, beta=self.beta,
                        activation=self.activation, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, activation={self.activation!r}"
