"""Tests of asyncfetch._cli."""
