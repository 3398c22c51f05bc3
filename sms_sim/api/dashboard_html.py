"""The operator dashboard's HTML: plain server-rendered pages, no script, no build step, no
CDN, so they work on a machine with no outside network and under a CSP that allows no script.

Every piece of text that came from outside (message content, recipients, a provider's error,
the tenant's name, an error message) goes through ``_text`` (``html.escape`` with quotes),
and every URL we build from data is made of integers or validated status names, quoted
too, so hostile content shows as text and never becomes markup.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping, Sequence

from sms_sim.dispatch.contract import DeliveryStatus, DeliveryView, MessageStatus, MessageView
from sms_sim.dispatch.service import Progress
from sms_sim.dispatch.validation import format_utc

__all__ = ["REFRESH_S", "login_page", "dashboard_page", "message_page", "error_page"]

REFRESH_S = 2  # how often a page showing work in progress reloads itself
_CONTENT_PREVIEW = 60  # characters of content in the messages table

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2329;background:#f5f6f8}
header{display:flex;align-items:center;gap:1em;background:#1d2329;color:#fff;padding:.6em 1.2em}
header h1{font-size:1.1em;margin:0;flex:1}
header a{color:#fff}
main{padding:1em 1.2em;max-width:1100px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
progress{width:11em;height:1em;vertical-align:middle}
.counts{display:flex;flex-wrap:wrap;gap:.6em;margin:0 0 1em;padding:0;list-style:none}
.counts li{background:#fff;border:1px solid #e3e6ea;border-radius:4px;padding:.4em .8em}
.counts b{display:block;font-size:1.3em}
.counts .dead b{color:#b3261e}
.content{white-space:pre-wrap;background:#fff;border:1px solid #e3e6ea;padding:.6em}
.note{color:#5b6570}
.error{color:#b3261e;font-weight:600}
.status-dead,.status-cancelled{color:#b3261e}
.status-sent,.status-delivered,.status-completed{color:#1e7b34}
form.inline{display:inline;margin:0}
button{font:inherit;padding:.3em .9em}
input[type=password]{font:inherit;padding:.3em;width:28em;max-width:100%}
nav.pages{margin:.8em 0}
"""


def _text(value: object) -> str:
    """Any value as HTML text, quotes escaped too (so it is safe in attributes as well)."""
    return html.escape(str(value), quote=True)


def _attributes(**values: object) -> str:
    """``name="value"`` pairs, each value escaped."""
    return " ".join(name + '="' + _text(value) + '"' for name, value in values.items())


def _page(title: str, body: str, *, tenant: str | None = None, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" {_attributes(content=REFRESH_S)}>' if refresh else ""
    signed_in = "" if tenant is None else (
        f'<span>tenant <b>{_text(tenant)}</b></span>'
        '<form class="inline" method="post" action="/logout">'
        '<button type="submit">Sign out</button></form>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_text(title)} · sms_sim</title>{meta}"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<style>{_CSS}</style></head><body>"
            f'<header><h1><a href="/">sms_sim</a> · {_text(title)}</h1>{signed_in}</header>'
            f"<main>{body}</main></body></html>")


def login_page(problem: str | None = None) -> str:
    """The sign-in form: an API key, entered once and then kept in a session cookie."""
    shown = "" if problem is None else f'<p class="error" role="alert">{_text(problem)}</p>'
    return _page("sign in", shown + (
        "<p>Sign in with an API key of your tenant (<code>sms_sim apikey create --tenant "
        "NAME</code>). It is kept in a cookie for this browser session only.</p>"
        '<form method="post" action="/login">'
        '<label for="key">API key</label><br>'
        '<input type="password" id="key" name="key" autocomplete="off" required autofocus> '
        '<button type="submit">Sign in</button></form>'))


def error_page(title: str, detail: str, *, tenant: str | None = None) -> str:
    return _page(title, f'<p class="error">{_text(detail)}</p><p><a href="/">Back to the '
                        "messages</a></p>", tenant=tenant)


def _progress_bar(progress: Progress) -> str:
    total = max(progress.total, 1)  # a bar of nothing is an empty bar, not an error
    return (f"<progress {_attributes(value=progress.sent, max=total)}>"
            f"{progress.sent_fraction:.0%}</progress> {progress.sent_fraction:.0%}")


def _counts(counts: Mapping[DeliveryStatus, int], *, links_for: int | None = None) -> str:
    """Deliveries by status; the dead ones are the dead letters (``id="dead-letters"``) on
    the dashboard, and each status links to its deliveries on a message's page."""
    items = []
    for status in DeliveryStatus:
        label, css = _text(status), ""
        if status is DeliveryStatus.DEAD:
            css = ' class="dead"' if links_for is not None else \
                ' class="dead" id="dead-letters"'
            label = label if links_for is not None else "dead letters"
        if links_for is not None:
            query = urllib.parse.urlencode({"status": status.value})
            label = f'<a href="/messages/{links_for}?{_text(query)}">{label}</a>'
        items.append(f"<li{css}><b>{counts.get(status, 0):,}</b>{label}</li>")
    return f'<ul class="counts">{"".join(items)}</ul>'


def _status(view: MessageView) -> str:
    shown = str(view.status) if view.outcome is None else f"{view.status} ({view.outcome})"
    return f'<span class="status-{_text(view.status)}">{_text(shown)}</span>'


def _preview(content: str) -> str:
    single = " ".join(content.split())
    return single if len(single) <= _CONTENT_PREVIEW else single[:_CONTENT_PREVIEW - 1] + "…"


def dashboard_page(tenant: str, messages: Sequence[tuple[MessageView, Progress]],
                   counts: Mapping[DeliveryStatus, int], *, next_before: int | None,
                   paged: bool) -> str:
    """The tenant's messages, newest first, with progress, and its deliveries by status."""
    rows = "".join(
        f'<tr id="message-{view.id}"><td class="num"><a href="/messages/{view.id}">'
        f"{view.id}</a></td><td>{_status(view)}</td><td>{_text(_preview(view.content))}</td>"
        f'<td class="num">{view.recipient_count:,}</td><td>{_progress_bar(progress)}</td>'
        f'<td class="num">{progress.sent:,}</td><td class="num">{progress.dead:,}</td>'
        f"<td>{_text(format_utc(view.scheduled_at))}</td></tr>"
        for view, progress in messages)
    table = ("<table><thead><tr><th class=\"num\">id</th><th>status</th><th>content</th>"
             "<th class=\"num\">recipients</th><th>progress</th><th class=\"num\">sent</th>"
             "<th class=\"num\">dead</th><th>due</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>") if rows else \
        '<p class="note">No messages yet: submit one through the API (POST /v1/messages).</p>'
    pages = []
    if paged:
        pages.append('<a href="/">newest</a>')
    if next_before is not None:
        pages.append(f'<a href="/?before={next_before}">older</a>')
    nav = f'<nav class="pages">{" · ".join(pages)}</nav>' if pages else ""
    body = ("<h2>Deliveries</h2>" + _counts(counts) + "<h2>Messages</h2>" + table + nav
            + f'<p class="note">This page reloads every {REFRESH_S} s.</p>')
    return _page("messages", body, tenant=tenant, refresh=True)


def message_page(tenant: str, view: MessageView, progress: Progress,
                 deliveries: Sequence[DeliveryView], *, status: DeliveryStatus | None,
                 next_after: int | None, paged: bool) -> str:
    """One message: status, progress, content, and a page of its deliveries; it reloads
    itself while the message can still change."""
    facts = [("status", _status(view)), ("progress", _progress_bar(progress)),
             ("recipients", f"{view.recipient_count:,}"), ("priority", _text(view.priority)),
             ("version", _text(view.version)),
             ("segments", _text(f"{view.segments} ({view.encoding}) per recipient")),
             ("due", _text(format_utc(view.scheduled_at))),
             ("valid until", _text(format_utc(view.valid_until))),
             ("dispatch started", _text(format_utc(view.dispatch_started_at))),
             ("completed", _text(format_utc(view.completed_at)))]
    if progress.rate_per_s is not None:
        facts.append(("rate", f"{progress.rate_per_s:,.1f} sent/s"))
    if progress.eta_at is not None:
        facts.append(("ETA", _text(format_utc(progress.eta_at))))
    summary = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    rows = "".join(
        f'<tr><td class="num">{d.id}</td><td>{_text(d.recipient)}</td>'
        f'<td class="status-{_text(d.status)}">{_text(d.status)}</td>'
        f'<td class="num">{d.attempts}</td><td>{_text(format_utc(d.sent_at))}</td>'
        f"<td>{_text(d.last_error or '')}</td></tr>" for d in deliveries)
    which = "" if status is None else f" {_text(status)}"
    listing = ("<table><thead><tr><th class=\"num\">id</th><th>recipient</th><th>status</th>"
               "<th class=\"num\">attempts</th><th>sent at</th><th>last error</th></tr></thead>"
               f"<tbody>{rows}</tbody></table>") if rows else \
        f'<p class="note">No{which} deliveries{" on this page" if paged else ""}.</p>'
    base = {} if status is None else {"status": status.value}
    pages = []
    if paged:
        pages.append(f'<a href="/messages/{view.id}?{_text(urllib.parse.urlencode(base))}">'
                     "first page</a>")
    if next_after is not None:
        query = urllib.parse.urlencode({**base, "after": next_after})
        pages.append(f'<a href="/messages/{view.id}?{_text(query)}">next page</a>')
    nav = f'<nav class="pages">{" · ".join(pages)}</nav>' if pages else ""
    filtered = "" if status is None else \
        f' (only {_text(status)}: <a href="/messages/{view.id}">all</a>)'
    live = view.status in (MessageStatus.SCHEDULED, MessageStatus.DISPATCHING)
    body = (f"<table>{summary}</table><h2>Content</h2>"
            f'<div class="content">{_text(view.content)}</div>'
            "<h2>Deliveries by status</h2>" + _counts(view.counts, links_for=view.id) +
            f"<h2>Deliveries{filtered}</h2>" + listing + nav)
    return _page(f"message {view.id}", body, tenant=tenant, refresh=live)
