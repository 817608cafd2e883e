"""pyproxy: a pure-Python asyncio HTTPS reverse proxy that speaks the Kubernetes Gateway API."""

__version__ = "0.1.0"
