"""Tests of ebr_ref.models."""
