"""Tests of asyncfetch._cache."""
