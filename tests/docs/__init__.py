"""Tests that the documentation runs and agrees with the code."""
