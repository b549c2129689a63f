"""The advisor: which regularizer, where and how strong, for a given model and data set — found by an Optuna search
on the validation split, then confirmed on fresh seeds against the baseline with Holm-corrected paired tests.

    >>> from dropkit.lab.advisor import advise
    >>> advice = advise("cnn", "fashion_mnist", budget="10m", train_size=1000)   # doctest: +SKIP
    >>> print(advice.conclusion()); print(advice.code())                        # doctest: +SKIP

Modules: ``arms`` (what is compared and where it goes), ``search`` (Optuna studies), ``budget`` (splitting the
time), ``confirm`` (the confirmation runs), ``statistics`` (paired tests, Holm, detectable effect), ``answer`` (the
ranked result), ``report`` (Markdown, HTML, figures), ``withheld`` (the test-split guard); the command line is
``dropkit.lab.cli.advise``.
"""

from dropkit.lab.advisor.advise import DEFAULT_METHODS, advise
from dropkit.lab.advisor.answer import Advice, Candidate
from dropkit.lab.advisor.arms import Arm, Member

__all__ = ["advise", "Advice", "Candidate", "Arm", "Member", "DEFAULT_METHODS"]
