"""Tests of asyncfetch._service."""
