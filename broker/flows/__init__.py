"""Use cases that tie the core to the store: connect, share, revoke, audit.

No web framework here either; the web layer and the CLI call these.
"""
