"""Talking to the Kubernetes API: configuration, the HTTP client, permission checks, registration."""
