"""Validation of an access token at its provider. It runs only after the token was
persisted (the engine decides it as a separate step), and its verdict never touches
the token: it becomes the ``Validated`` condition."""

from __future__ import annotations

from externalauth.engine.ports import Clock
from externalauth.engine.provider_states import Providers
from externalauth.model.secure import SecretStr
from externalauth.policy.classifying import ValidationOutcome


class Validator:
    def __init__(self, *, providers: Providers, clock: Clock) -> None:
        self._providers = providers
        self._clock = clock

    async def validate(self, *, provider: str, access_token: SecretStr) -> ValidationOutcome | None:
        """The provider's verdict, or None when the provider has no client (any more)."""
        runtime = self._providers.get(provider)
        if runtime is None or runtime.client is None or runtime.validations is None:
            return None
        # A bound of their own: maxConcurrentRefreshes bounds token-endpoint calls (contract
        # §2), and a validation holding an exchange's slot slowed a storm's persists twice.
        async with runtime.validations:
            return await runtime.client.validate(access_token, now=self._clock.now())
