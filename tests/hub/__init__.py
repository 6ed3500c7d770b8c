"""Tests of asyncfetch._hub."""
