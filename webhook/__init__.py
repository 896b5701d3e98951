"""admission-webhook: a Kubernetes admission webhook server."""

__version__ = "0.1.0"
