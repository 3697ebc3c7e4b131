"""The ``externalauth`` command line."""
