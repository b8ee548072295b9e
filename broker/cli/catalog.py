"""``broker catalog list``: the data categories a manifest's ``[[data]]`` may declare."""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli import common
from broker.cli.common import say

__all__ = ["register"]


def cmd_catalog_list(args: argparse.Namespace) -> int:
    catalog = common.catalog(common.settings(args))
    if args.json:  # the same document as GET /v1/catalog
        say(json.dumps(catalog.to_dict(), indent=2))
        return 0
    key_width = max(len(c.key) for c in catalog.categories)
    title_width = max(len(c.title) for c in catalog.categories)
    for heading, categories in catalog.by_heading():
        if not categories:
            continue
        say(f"{heading.title} ({heading.key})")
        for c in categories:
            say(f"  {c.key:<{key_width}}  {c.title:<{title_width}}  {c.sensitivity}")
    return 0


def register(sub: Any) -> None:
    cat = sub.add_parser("catalog", help="the platform's data categories").add_subparsers(
        dest="catalog", required=True
    )
    p = cat.add_parser("list", help="list the categories, by policy heading, with titles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalog_list)
