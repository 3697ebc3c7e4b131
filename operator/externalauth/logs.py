"""The one list of third-party loggers that would log secrets, and the call that quiets them.

``requests_oauthlib``, ``oauthlib`` and ``urllib3`` log request bodies and headers
(tokens, client secrets) at DEBUG; the official Kubernetes client (tests and
benchmarks only) logs response bodies (Secret data). Whatever the operator's
verbosity (kopf's ``-v``/``--debug`` included), they stay at WARNING: contract §9.8.

Not pure: it sets process-wide logger levels. Idempotent.
"""

from __future__ import annotations

import logging

NOISY_LOGGERS = (
    "requests_oauthlib",
    "oauthlib",
    "urllib3",
    "urllib3.connectionpool",
    "kubernetes.client.rest",
)


def quiet_noisy_loggers() -> None:
    """Set every logger in :data:`NOISY_LOGGERS` to WARNING."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
