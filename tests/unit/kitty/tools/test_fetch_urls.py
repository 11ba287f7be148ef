"""Malformed URLs are refused with a clear message: by the check, and by the service (422)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from endpoints.config import FetchSettings
from kitty.errors import ToolError, UserError
from kitty.service import ServiceSettings, create_app
from kitty.tools._fetch import check_url_allowed, fetch_bytes
from tests.helpers import offline_fleet

MALFORMED = [
    ("http://93.184.216.34:99999/", "port 99999 is not a valid port"),
    ("http://93.184.216.34:0/", "port 0 is not a valid port"),
    ("http://93.184.216.34:8o/", "port 8o is not a valid port"),
    ("http://93.184.216.34/a\tb", "a tab"),
    ("http://93.184.216.34/a\nb", "a line break"),
    ("http://exa mple.com/", "a space"),
    ("http://93.184.216.34/\x00", "a control character"),
    ("http://[::1/", "not a valid URL"),
]
IDS = ["port-99999", "port-0", "port-letters", "tab", "newline", "space", "nul", "bracket"]


@pytest.mark.parametrize(("url", "says"), MALFORMED, ids=IDS)
def test_a_malformed_url_is_refused_by_the_check(url: str, says: str) -> None:
    """Security review finding 14: a bad port or a control character is a clear refusal."""
    with pytest.raises(ToolError, match=says) as refused:
        check_url_allowed(url, FetchSettings())
    assert isinstance(refused.value, UserError)
    assert repr(url.strip()) in str(refused.value)


@pytest.mark.parametrize(("url", "says"), MALFORMED, ids=IDS)
async def test_a_malformed_url_is_refused_by_the_fetch(url: str, says: str) -> None:
    """Security review finding 14: the fetch says the same (no httpx error escapes)."""
    with pytest.raises(ToolError, match=says):
        await fetch_bytes(url, FetchSettings(), max_bytes=100)


@pytest.mark.parametrize(("url", "says"), MALFORMED, ids=IDS)
async def test_the_service_answers_a_malformed_image_url_with_422(
    tmp_path: Path, url: str, says: str
) -> None:
    """Security review finding 14: the service said 500; it says 422 and why."""
    app = create_app(
        ServiceSettings(fleet=str(offline_fleet(tmp_path)), start_embedded=False, api_token=None)
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post(
            "/api/query/parallel", json={"query": "Describe it", "images": [url]}
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "images.0" and says in body["error"], body
