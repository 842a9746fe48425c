"""Tests of ebr_ref.layers."""
