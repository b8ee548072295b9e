# ruff: noqa: E501  (the page template and its stylesheet, kept as written)
"""The user's report (GDPR Art. 15) as one standalone HTML page: its own inline style
(the API serves it with a CSP allowing only that), a print stylesheet so it prints
cleanly to PDF, and what pins it to a log state under the title."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

__all__ = ["render_user_report"]

_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
code{font-size:.85em;overflow-wrap:anywhere}.meta{color:#4a5560;font-size:.9rem}
.flag{background:#fff3cd}.key{color:#4a5560}
@media print{body{font-size:10.5pt;max-width:none;margin:0;padding:0}
a{color:#000;text-decoration:none}a[href^="http"]::after{content:" (" attr(href) ")";font-size:.85em}
h1,h2,h3{break-after:avoid}tr,section,li{break-inside:avoid}thead{display:table-header-group}
.flag{background:none;border-left:3pt solid #000;padding-left:4pt}
@page{margin:15mm;size:A4}}"""

_HTML = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Who received the data of {{ r.user_id }}</title>
<style>{{ style|safe }}</style></head><body>
<h1>Who received the data of {{ r.user_id }}</h1>
{% set m = r.report %}{% if m %}<p class="meta">Generated {{ m.generated_at }}
{%- if m.controller %} by {{ m.controller }} (the controller){% endif %}.
{% if m.checkpoint %}Computed from the audit log at its signed checkpoint of {{ m.checkpoint.tree_size }}
entries, root <code>{{ m.checkpoint.root_hash }}</code>{% else %}No checkpoint of the audit log was signed yet{% endif %}
{%- if m.head %}; log head entry {{ m.head.seq }}{% endif %}.</p>{% endif %}
{% if r.no_data %}<p>{{ r.message }}.</p>{% endif %}
{% set a = r.art15 or {} %}
<h2>Why: purposes (Art. 15(1)(a))</h2>
{% if a.purposes %}<ul>{% for p in a.purposes %}<li>{{ p.purpose }} ({{ p.recipients|join(", ") }})</li>{% endfor %}</ul>
{% else %}<p>No data was sent for any purpose.</p>{% endif %}
<h2>What: categories of data (Art. 15(1)(b))</h2>
{% if a.sent_under %}<table><thead><tr><th scope="col">Data</th><th scope="col">Key</th><th scope="col">Recipient</th>
<th scope="col">Times</th><th scope="col">Terms version it was sent under</th><th scope="col">Policy snapshots shown at consent</th></tr></thead><tbody>
{% for c in a.sent_under %}<tr{% if c.kind == "legal" %} class="flag"{% endif %}><td>{{ c.title }}</td><td class="key"><code>{{ c.category }}</code></td>
<td>{{ c.recipient_name }}</td><td>{{ c.times }}</td>
<td>{% if c.terms_version %}<code>{{ c.terms_version }}</code>{% elif c.kind == "legal" %}disclosure required by law{% else %}not recorded{% endif %}</td>
<td>{% for page, d in (c.policy_digests or {})|dictsort %}{{ page|replace("_", " ") }}: {% if d %}SHA-256 <code>{{ d }}</code>{% else %}not retrieved{% endif %}{% if not loop.last %}<br>{% endif %}{% else %}—{% endfor %}</td></tr>
{% endfor %}</tbody></table>{% else %}<p>No data of this user was sent.</p>{% endif %}
<h2>Who: recipients (Art. 15(1)(c))</h2>
{% if not r.recipients %}<p>No third party has received this user's data.</p>{% endif %}
{% for x in r.recipients %}<section{% if x.flagged %} class="flag"{% endif %}>
<h3>{{ x.name }}{% if x.flagged %} (disclosure required by law){% endif %}</h3>
<p>{{ x.disclosures }} disclosure(s), first {{ x.first_at.strftime("%Y-%m-%d %H:%M") }} UTC,
last {{ x.last_at.strftime("%Y-%m-%d %H:%M") }} UTC.
Legal basis: {{ x.legal_bases|join(", ") }}.</p>
<p>Data: {% for c in x.categories %}{{ titles.get(c, c) }} <code class="key">{{ c }}</code>{% if not loop.last %}, {% endif %}{% endfor %}<br>
Fields: {{ x.field_paths|join(", ") or "-" }}</p>
<p>Purposes: {{ x.purposes|join("; ") }}<br>Uses: {{ x.uses|join(", ") }}</p>
{% if x.references %}<p>Reference: {{ x.references|join(", ") }}</p>{% endif %}
{% if x.privacy_policy_url %}<p><a href="{{ x.privacy_policy_url }}">Privacy policy</a>{% if x.terms_url %} ·
<a href="{{ x.terms_url }}">Terms</a>{% endif %}</p>{% endif %}</section>{% endfor %}
<h2>How long: retention (Art. 15(1)(d))</h2>
{% if a.retention %}<ul>{% for x in a.retention %}<li>{{ x.name }}: {{ x.period or "no retention period declared; ask the recipient" }}</li>{% endfor %}</ul>{% endif %}
<p>The broker keeps no copy of the data it sent; it keeps this record of what it sent.</p>
<h2>Your rights (Art. 15(1)(e)-(f))</h2>
<ul>{% for x in a.rights or [] %}<li><strong>{{ x.title }}</strong>: {{ x.how }}.</li>{% endfor %}</ul>
<h2>Source and automated decisions (Art. 15(1)(g)-(h))</h2>
<p>Source: {{ a.source }}.<br>Automated decisions: {{ a.automated_decisions }}.</p>
{% if r.objections %}<h2>Objections to uses of the data</h2><ul>{% for o in r.objections %}
<li>{{ o.time.strftime("%Y-%m-%d %H:%M:%S") }} UTC: {{ o.action }} {{ o.uses|join(", ") }}</li>
{% endfor %}</ul>{% endif %}
<h2>Every disclosure</h2><table><thead><tr><th scope="col">When (UTC)</th><th scope="col">Recipient</th><th scope="col">Data</th>
<th scope="col">Purpose</th><th scope="col">Legal basis</th></tr></thead><tbody>{% for d in r.disclosures %}
<tr{% if d.flagged %} class="flag"{% endif %}><td>{{ d.time.strftime("%Y-%m-%d %H:%M:%S") }}</td>
<td>{{ d.recipient_name }}</td><td>{% for c in d.categories %}{{ titles.get(c, c) }}{% if not loop.last %}, {% endif %}{% endfor %}</td><td>{{ d.purpose or "" }}</td>
<td>{{ d.legal_basis }}{% if d.reference %} ({{ d.reference }}){% endif %}</td></tr>{% endfor %}
</tbody></table></body></html>
"""
)


def render_user_report(report: dict[str, Any]) -> str:
    """``report``: a :func:`broker.flows.reports.user_report`."""
    sections = report.get("art15") or {}
    titles = {c["category"]: c["title"] for c in sections.get("categories", [])}
    return _HTML.render(r=report, titles=titles, style=_STYLE)
