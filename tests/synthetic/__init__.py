"""Tests of ebr_ref.synthetic."""
