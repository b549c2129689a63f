"""Spectral dropout: orthonormal DCTs, thresholding against a dense reference, stochastic removal."""

from __future__ import annotations

import math

import pytest
import torch

import dropkit
from dropkit.methods.spectral_dropout import SpectralDropout, dct_matrix, spectral_dropout
from helpers.props import binomial_tolerance, seeded
from helpers.shared_properties import ActivationDefaultsProperties


@pytest.mark.parametrize("name", ["spectral_dropout"])
class TestDefaults(ActivationDefaultsProperties):
    pass


@pytest.mark.parametrize("name, kind", [("spectral_dropout", "activation")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_dct_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    torch.testing.assert_close(d @ d.t(), torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(d[1:].sum(dim=1), torch.zeros(n - 1, dtype=torch.float64), atol=1e-12, rtol=0)


def _dense_operator(variant: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The transform as one (numel/N × numel/N) matrix on a sample flattened in C-order."""
    c, spatial = shape[1], shape[2:]
    eye_s = torch.eye(math.prod(spatial), dtype=torch.float64)
    if variant == "channel":
        return torch.kron(dct_matrix(c, dtype=torch.float64), eye_s)
    if variant == "hypercolumn":
        a = max(d for d in range(1, math.isqrt(c) + 1) if c % d == 0)
        k = torch.kron(dct_matrix(a, dtype=torch.float64), dct_matrix(c // a, dtype=torch.float64))
        return torch.kron(k, eye_s)
    h, w = spatial
    k = torch.kron(dct_matrix(h, dtype=torch.float64), dct_matrix(w, dtype=torch.float64))
    return torch.kron(torch.eye(c, dtype=torch.float64), k)


@pytest.mark.parametrize("variant, shape", [("hypercolumn", (3, 12, 3, 2)), ("hypercolumn", (3, 7, 2, 2)),
                                            ("channel", (3, 6, 2, 3)), ("spatial", (2, 3, 4, 5)),
                                            ("hypercolumn", (4, 10))])
def test_spectral_matches_dense_dct_threshold(variant, shape):
    x = torch.randn(shape, dtype=torch.float64)
    op = _dense_operator(variant, shape)
    coef = x.reshape(shape[0], -1) @ op.t()
    expected = ((coef * (coef.abs() > 0.5)) @ op).view(shape)
    y = spectral_dropout(x, 1.0, tau=0.5, variant=variant)
    torch.testing.assert_close(y, expected)
    # Removed energy = energy of the coefficients at or below tau (orthonormal transform).
    removed = ((x - y) ** 2).sum()
    torch.testing.assert_close(removed, (coef ** 2 * (coef.abs() <= 0.5)).sum())


@pytest.mark.parametrize("variant", ["hypercolumn", "channel", "spatial"])
def test_spectral_tiny_tau_is_identity_round_trip(variant):
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(spectral_dropout(x, tau=1e-300, variant=variant), x)
    assert torch.equal(spectral_dropout(x, tau=0.0, variant=variant), x)


def test_spectral_stochastic_removes_at_most_the_weak_energy():
    x = torch.randn(8, 16, 4, 4, dtype=torch.float64)
    op = _dense_operator("hypercolumn", x.shape)
    coef = x.reshape(8, -1) @ op.t()
    weak = coef.abs() <= 0.5
    y = spectral_dropout(x, 0.5, tau=0.5, generator=seeded(7))
    kept_coef = y.reshape(8, -1) @ op.t()
    removed = (kept_coef.abs() < 1e-9) & (coef.abs() > 1e-9)
    assert not (removed & ~weak).any()  # strong coefficients always kept
    frac = removed.sum().item() / weak.sum().item()
    assert abs(frac - 0.5) < binomial_tolerance(int(weak.sum()), 0.5)
    assert ((x - y) ** 2).sum() <= (coef ** 2 * weak).sum() + 1e-9


def test_spectral_huge_tau_gives_zero_and_bad_options():
    assert torch.equal(spectral_dropout(torch.randn(2, 4, 3, 3), tau=1e9), torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="variant"):
        SpectralDropout(variant="wavelet")
    with pytest.raises(ValueError, match="tau"):
        SpectralDropout(tau=-1.0)
    with pytest.raises(ValueError, match="spatial"):
        spectral_dropout(torch.randn(2, 4, 5), variant="spatial")
