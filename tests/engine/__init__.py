"""Tests of asyncfetch._engine."""
