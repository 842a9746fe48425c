"""The examples in the docstrings run and print what they show (doctest)."""

import doctest
import importlib

import pytest

MODULES = [
    "ebr_ref.layers.conv2d",
    "ebr_ref.layers.maxpool2d",
    "ebr_ref.layers.avgpool2d",
    "ebr_ref.layers.temporal_mean",
    "ebr_ref.evaluation.metrics",
    "ebr_ref.evaluation.localize",
    "ebr_ref.evaluation.annotations",
    "ebr_ref.tools.viz",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
