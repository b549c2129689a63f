"""The search never sees the test split: it gets a copy of the dataset whose test tensors are replaced by a guard
that raises on any use. A search that asked for a test number by mistake would fail loudly instead of quietly
tuning on the test set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

__all__ = ["TestSplitWithheld", "WithheldSplit", "withhold_test", "is_withheld"]


class TestSplitWithheld(RuntimeError):
    """Raised when code touches the test split of a dataset handed to the search."""

    __test__ = False  # not a pytest test class


class WithheldSplit:
    """Stands in for a test tensor during the search; every use raises :class:`TestSplitWithheld`."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TestSplitWithheld(f"the test split ({self._name}) is withheld until the confirmation; "
                                "the search may only read the training and validation splits")

    __len__ = __iter__ = __getitem__ = __array__ = __bool__ = _refuse

    def __getattr__(self, attr: str) -> NoReturn:
        self._refuse()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> NoReturn:
        raise TestSplitWithheld("the test split is withheld until the confirmation")

    def __repr__(self) -> str:
        return f"WithheldSplit({self._name!r})"


def withhold_test(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` (a ``dropkit.lab.data.Dataset``) whose ``x_test`` and ``y_test`` are guards."""
    return dataclasses.replace(dataset, x_test=WithheldSplit("x_test"), y_test=WithheldSplit("y_test"))


def is_withheld(value: Any) -> bool:
    return isinstance(value, WithheldSplit)
