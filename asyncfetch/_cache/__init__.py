"""The cache: whether a file on disk is already good, its markers, the cache directory."""
