"""The HTTP inference service: dispatch, repositioning and quotes over a loaded policy.

Modules: ``schemas`` (request and response bodies), ``state`` (what is served, and a request as
simulator state), ``answers`` (what each endpoint computes), ``metrics`` (Prometheus metrics),
``guard`` (the outermost ASGI layer: body limit, request metrics), ``errors`` (client errors and
internal-error reports), ``app`` (``create_app``: routes, lifespan, exception handlers).
"""

from gigdispatch.service.app import create_app

__all__ = ["create_app"]
