"""Building the admin pages' HTML on the server: escaped elements, the inlined assets, their CSP, formatting.

Everything the pages show comes from the engine and, through dead letters and peers' /status, from message keys,
service replies and other processes: untrusted text. :func:`el` escapes every ``str`` it is given; only
:class:`Html` (markup built here) goes in as it is.

The formatting functions have twins in ``status.js`` that must print the same text for the same number (the
page's first paint is the server's, then the script redraws it): they round half up through the same float
operations (``Math.floor(x * 10 + 0.5)``), never through ``round`` or ``%.1f``, which round halves to even.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

UNKNOWN = "\u2013"
"""Shown (an en dash) for a value not known yet, e.g. the lag before any partition is assigned."""


class Html(str):
    """Markup that is already escaped: :func:`el` inserts it as it is, and escapes any other ``str``."""


Child = str | int | Html | None | Sequence["Child"]


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Html:
    """``<tag attrs>children</tag>``: attribute values and text children escaped; None and False attrs left out."""
    parts = [f"<{tag}"]
    for name, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        parts.append(f" {name}" if value is True else f' {name}="{html.escape(str(value))}"')
    parts.append(">")
    parts.extend(_children(children))
    parts.append(f"</{tag}>")
    return Html("".join(parts))


def _children(children: Sequence[Child]) -> list[str]:
    out: list[str] = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, Html):
            out.append(child)
        elif isinstance(child, str | int):
            out.append(html.escape(str(child), quote=False))
        else:
            out.extend(_children(child))
    return out


@cache
def asset(name: str) -> str:
    return resources.files("streamcar.admin").joinpath(name).read_text(encoding="utf-8")


def content_security_policy(nonce: str) -> str:
    """Only the inlined style and script of this response run; the script may only fetch from this server."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def script_json(text: str) -> str:
    # inside <script>, "</" would end the element: JSON allows \u-escaping the characters that could
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def head(title: str, nonce: str, *extra: Child) -> Html:
    return el(
        "head",
        None,
        Html('<meta charset="utf-8">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Html('<link rel="icon" href="data:,">'),
        extra,
        el("title", None, title),
        el("style", {"nonce": nonce}, Html(asset("status.css"))),
    )


# -- formatting (status.js: fmt, fixed, rateText, seconds, percent, clock, iso) -------------------------------
def fmt(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else UNKNOWN


def fixed(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals, halves rounded up (as ``status.js``' ``fixed``)."""
    scale = 10**digits
    return f"{math.floor(x * scale + 0.5) / scale:.{digits}f}"


def rate_text(rate: object) -> str:
    """A rate per second: one decimal below 10, whole numbers with separators from there."""
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return UNKNOWN
    return fixed(rate, 1) if rate < 10 else f"{math.floor(rate + 0.5):,}"


def seconds_text(s: object) -> str:
    """A duration in the unit that reads best: ``840 µs``, ``4.2 ms``, ``45 ms``, ``1.25 s``."""
    if not isinstance(s, int | float) or isinstance(s, bool):
        return UNKNOWN
    if s < 0.001:
        return f"{math.floor(s * 1000000 + 0.5)} µs"
    if s < 0.01:
        return f"{fixed(s * 1000, 1)} ms"
    if s < 1:
        return f"{math.floor(s * 1000 + 0.5)} ms"
    return f"{fixed(s, 2)} s" if s < 10 else f"{fixed(s, 1)} s"


def percent(n: int, total: int) -> str:
    if not total:
        return ""
    share = 100.0 * n / total
    return f"{math.floor(share + 0.5)}%" if share >= 1 or share == 0 else "<1%"  # rounds like Math.round


def per_mille(n: int, total: int) -> int:
    return (2000 * n + total) // (2 * total) if total else 0


def _utc(at: object) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(at, dt.UTC) if isinstance(at, int | float) else None


def clock(at: object) -> str:
    moment = _utc(at)
    return UNKNOWN if moment is None else moment.strftime("%H:%M:%S")


def iso(at: object) -> str | None:
    moment = _utc(at)
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: object) -> str:
    """An uptime: ``42s``, ``17m 3s``, ``5h 2m``, ``3d 4h``."""
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        return UNKNOWN
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
