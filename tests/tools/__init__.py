"""Tests of ebr_ref.tools."""
