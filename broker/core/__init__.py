"""The domain: catalog, manifests, grants, vault, OAuth client flow, audit log.

Nothing in this package imports a web framework or SQL; a test checks it.
"""
