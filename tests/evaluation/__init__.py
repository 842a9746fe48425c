"""Tests of ebr_ref.evaluation."""
