"""Tests of the weights_io package (checkpoint readers and converters)."""
