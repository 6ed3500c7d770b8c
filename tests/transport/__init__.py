"""Tests of asyncfetch._transport."""
