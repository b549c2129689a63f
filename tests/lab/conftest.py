"""Fixtures of the lab tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def npz(tmp_path_factory):
    """Three learnable classes (a bright square at one of three places) on 12×12 noise."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 3
        x = rng.normal(0, 0.3, (n, 12, 12)).astype(np.float32)
        for k in range(3):
            x[y == k, 2 + 3 * k: 5 + 3 * k, 2 + 3 * k: 5 + 3 * k] += 2.0
        return x, y

    x_tr, y_tr = make(90)
    x_te, y_te = make(30)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return str(path)
