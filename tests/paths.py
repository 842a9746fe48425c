"""Folders the tests read: the repository, its docs, the package data, the test data."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGE_DATA = REPO / "ebr_ref" / "data"
TEST_DATA = REPO / "tests" / "data"
