"""Server-rendered pages (Jinja2, no script): the consent page, the user's own page
(``/me``) and the auditor console (``/audit``)."""

__all__: list[str] = []
