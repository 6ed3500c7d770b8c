"""Tests of asyncfetch._storage."""
