"""Batches: many downloads under one connection budget, and the manifests that list them."""
