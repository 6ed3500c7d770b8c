"""Tests of asyncfetch._batch."""
