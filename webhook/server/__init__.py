"""The only layer that knows HTTP, TLS, uvicorn and worker processes."""
