"""I/O with the Kubernetes API server: Secrets (compare-and-swap), status, events, watches.

Raw JSON over one urllib3 connection pool (:mod:`~externalauth.kube.connecting`); every
call is synchronous and runs in the engine's thread pool. Errors are translated into :mod:`externalauth.errors` in one
place, :mod:`externalauth.kube.translating`, for the operator, the CLI and the preflight.
"""
