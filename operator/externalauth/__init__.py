"""externalauth-operator: keeps users' OAuth2 tokens for external providers fresh in Secrets.

Layout (imports only point downwards):

* ``model``, ``policy``, ``providers`` — pure: no I/O, no clocks, no kopf/kubernetes/requests.
* ``oauth`` — I/O: token exchange and validation at the provider (requests, oauthlib).
* ``kube`` — I/O: Secret compare-and-swap, claims, status patches, events (kubernetes client).
* ``engine`` — orchestration: caches fed by watches, one scheduler, single-flight refreshes.
* ``handlers`` — kopf wiring only.
* ``cli`` — the ``externalauth`` command.
"""

__version__ = "0.1.0"
GROUP = "externalauth.io"
VERSION = "v1alpha1"
PREFIX = "externalauth.io/"
