"""Storage: the part file, its journal and hasher, locks, and the target path."""
