"""The engine: one download from request to verified file (probe, plan, workers, retries)."""
