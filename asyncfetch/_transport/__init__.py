"""Transport: the HTTP clients (aiohttp, the raw fast path), answers, credentials, budget."""
