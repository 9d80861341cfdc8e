"""/docs serves the API reference offline: Swagger UI from the installed package over /openapi.json."""

from __future__ import annotations

import re
from typing import Any

import requests


def test_docs_page_and_its_assets_come_from_this_server(http_stack: Any) -> None:
    page = requests.get(http_stack.url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'url: "/openapi.json"' in page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), "nothing from a CDN"
    for source in sources:
        asset = requests.get(http_stack.url + source, timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 10_000, source
    bundle = requests.get(http_stack.url + "/docs/assets/swagger-ui-bundle.js", timeout=10).text
    assert "SwaggerUIBundle" in bundle
    assert requests.get(http_stack.url + "/openapi.json", timeout=10).json()["info"]["title"]
