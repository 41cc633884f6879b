"""The peers sse-jobs is measured against: a bare aiohttp-sse broadcast server and Huey."""
