"""The loggers that would print tokens stay quiet at every verbosity (contract §9.8)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from externalauth import logs


@pytest.fixture
def root_at_debug() -> Iterator[None]:
    """The root logger at DEBUG, as kopf's ``--debug`` leaves it; every level restored afterwards."""
    names = ["", *logs.NOISY_LOGGERS]
    saved = {name: logging.getLogger(name).level for name in names}
    logging.getLogger().setLevel(logging.DEBUG)
    for name in logs.NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("name", [
    pytest.param("requests_oauthlib.oauth2_session", id="requests-oauthlib's session logs the token request"),
    pytest.param("oauthlib", id="oauthlib's request objects log their body"),
    pytest.param("oauthlib.oauth2.rfc6749.parameters", id="oauthlib's token parser logs the token"),
    pytest.param("urllib3.connectionpool", id="urllib3 logs every request line"),
    pytest.param("kubernetes.client.rest", id="the Kubernetes client logs response bodies"),
])
def test_a_library_logger_says_nothing_below_warning_even_when_the_root_is_at_debug(
        root_at_debug: None, name: str) -> None:
    assert logging.getLogger(name).isEnabledFor(logging.DEBUG)  # the premise: it would log
    logs.quiet_noisy_loggers()
    assert (False, False, True) == (logging.getLogger(name).isEnabledFor(logging.DEBUG),
                                    logging.getLogger(name).isEnabledFor(logging.INFO),
                                    logging.getLogger(name).isEnabledFor(logging.WARNING))
