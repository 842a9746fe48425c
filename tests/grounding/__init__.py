"""Tests of ebr_ref.grounding."""
