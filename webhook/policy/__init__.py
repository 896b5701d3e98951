"""Policy: what is allowed. Pure data and pure functions; no I/O on the request path, no HTTP."""
