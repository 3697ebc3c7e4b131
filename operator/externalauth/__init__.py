"""externalauth-operator: keeps users' OAuth2 tokens for external providers fresh in Secrets.

Layout (imports only point downwards):

* ``model``, ``policy``, ``providers`` — pure: no I/O, no clocks, no kopf, no network.
* ``transport`` — I/O: the one HTTP stack (urllib3): TLS, proxies, deadlines, body caps.
* ``oauth`` — I/O: calls to the provider (token exchange, validation, discovery, the sign-in
  flows) through one small transport; oauthlib prepares the refresh request.
* ``kube`` — I/O: our own API-server client (credentials found as kubectl finds them),
  Secret compare-and-swap, claims, status patches, events, watches. The official
  ``kubernetes`` client is used only by the tests and benchmarks (docs/decisions.md).
* ``engine`` — orchestration: caches fed by watches, one scheduler, single-flight refreshes.
* ``handlers``, ``runner`` — kopf wiring only.
* ``cli`` — the ``externalauth`` command.
"""

__version__ = "0.1.0"
GROUP = "externalauth.io"
VERSION = "v1alpha1"
PREFIX = "externalauth.io/"
