"""The API reference at /docs: Swagger UI over /openapi.json, served from the installed package.

The Swagger UI assets come from the `swagger-ui-bundle` wheel (a pinned dependency), so the page
works offline: no CDN, nothing fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gliclass-stream HTTP API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def docs_routes() -> list[web.AbstractRouteDef]:
    """GET /docs (the page) and its static assets under /docs/assets/."""
    return [
        web.get("/docs", _page),
        web.static(ASSETS, Path(str(swagger_ui_path)), append_version=False),
    ]
