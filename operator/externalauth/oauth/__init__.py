"""I/O with OAuth2 providers: token exchange (oauthlib prepares the request) and validation.

Calls are synchronous (run them in a thread), have explicit timeouts, verify TLS
against the system trust plus the provider's ``caBundle``, and never log or raise
with a token in the message.
"""
