"""Reasons for conditions and events, as str enums (contract §1, §4, §6). Pure."""

from __future__ import annotations

import enum


class ConditionType(enum.StrEnum):
    READY = "Ready"
    REFRESHABLE = "Refreshable"
    VALIDATED = "Validated"


class Status(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ReadyReason(enum.StrEnum):
    TOKEN_CURRENT = "TokenCurrent"
    TOKEN_EXPIRED = "TokenExpired"
    TOKEN_REJECTED = "TokenRejected"
    REAUTH_REQUIRED = "ReauthRequired"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    SECRET_NOT_OPTED_IN = "SecretNotOptedIn"
    PROVIDER_NOT_FOUND = "ProviderNotFound"
    PROVIDER_NOT_READY = "ProviderNotReady"
    PROVIDER_NOT_ALLOWED = "ProviderNotAllowed"
    INVALID_SPEC = "InvalidSpec"


class RefreshableReason(enum.StrEnum):
    REFRESHED = "Refreshed"
    NOT_YET_DUE = "NotYetDue"
    RETRYING_TRANSIENT_ERROR = "RetryingTransientError"
    PROVIDER_CREDENTIALS_REJECTED = "ProviderCredentialsRejected"
    REAUTH_REQUIRED = "ReauthRequired"
    NO_REFRESH_TOKEN = "NoRefreshToken"
    SUSPENDED = "Suspended"
    CLAIMED_ELSEWHERE = "ClaimedElsewhere"


class ValidatedReason(enum.StrEnum):
    VALID = "Valid"
    INVALID = "Invalid"
    RATE_LIMITED = "RateLimited"
    UNREACHABLE = "Unreachable"
    DISABLED = "Disabled"
    PENDING = "Pending"


class ProviderReason(enum.StrEnum):
    VALID = "Valid"
    CLIENT_SECRET_NOT_FOUND = "ClientSecretNotFound"
    INVALID_SPEC = "InvalidSpec"
    CREDENTIALS_REJECTED = "CredentialsRejected"


class EventReason(enum.StrEnum):
    REFRESHED = "Refreshed"
    REFRESH_SUPERSEDED = "RefreshSuperseded"
    REFRESH_FAILED = "RefreshFailed"
    REAUTH_REQUIRED = "ReauthRequired"
    VALIDATION_FAILED = "ValidationFailed"
    REFRESH_TOKEN_EXPIRING_SOON = "RefreshTokenExpiringSoon"
    # Bad input on the link (contract §9.7: a condition and an event).
    INVALID_INPUT = "InvalidInput"
    # A token obtained from the provider could not be stored (contract §3, §6).
    TOKEN_LOST = "TokenLost"
    # Revocation on deletion (contract §2 revokeOnDelete, §6).
    REVOKED = "Revoked"
    REVOCATION_FAILED = "RevocationFailed"


class RefreshResult(enum.StrEnum):
    """Label values of ``externalauth_refresh_total{result}``."""

    SUCCESS = "success"
    SUPERSEDED = "superseded"
    TRANSIENT_ERROR = "transient_error"
    REAUTH_REQUIRED = "reauth_required"
    PROVIDER_REJECTED = "provider_rejected"
