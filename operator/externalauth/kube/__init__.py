"""I/O with the Kubernetes API server: Secrets (compare-and-swap), status, events, watches.

One client for the operator and the CLI (:mod:`~externalauth.kube.api`), raw JSON over one
urllib3 connection pool (:mod:`~externalauth.kube.connection`), configured as kubectl would be
(:mod:`~externalauth.kube.config`, :mod:`~externalauth.kube.kubeconfigs`) with credentials that
stay fresh (:mod:`~externalauth.kube.credentials`); every call is synchronous and runs in the
engine's thread pool. Errors are translated into :mod:`externalauth.errors` in one
place, :mod:`externalauth.kube.translating`, for the operator, the CLI and the preflight.
"""
