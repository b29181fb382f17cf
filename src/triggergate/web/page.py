"""The interactive page (plain for now: a form that works without JavaScript)."""

from __future__ import annotations

from html import escape

from triggergate.settings import Settings


def render_page(settings: Settings, pipeline: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(settings.title)}</title></head>
<body><main>
<h1>{escape(settings.title)}</h1>
<p>{escape(settings.description)}</p>
<p>Pipeline: <strong>{escape(pipeline)}</strong></p>
<form method="post" action="/trigger"><button type="submit">Deploy</button></form>
<p><a href="/quota">Your remaining triggers</a></p>
</main></body></html>
"""
