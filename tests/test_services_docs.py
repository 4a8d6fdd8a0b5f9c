"""Every service's API documentation works without internet: ``/docs`` and ``/redoc`` load
only assets the service itself serves, and ``GET /`` leads to them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from conftest import client_of, serve_party
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.serve import build

# The network of the service under test, to open a client that trusts its TLS CA.
NETWORKS: dict[str, NetworkConfig] = {}


def _http(service: str) -> httpx.Client:
    """A client of ``service`` over TLS, with the central bank's certificate (it serves no
    client without one); relative URLs are the service's."""
    http = client_of(NETWORKS[service], CENTRAL)
    http.base_url = httpx.URL(service)
    return http


# src= and href= in the page, and url: '...' in Swagger UI's start-up script.
REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""")
TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


@pytest.fixture(scope="module", params=[CENTRAL, "bank-a"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The party served over real HTTP on a loopback port; yields its base URL."""
    network = init_network(tmp_path_factory.mktemp("docs"), ["bank-a"])
    built = build(network, request.param, retry_every=-1)
    url = network.urls[request.param]
    NETWORKS[url] = network
    try:
        with serve_party(network, request.param, create_app(built.service)):
            yield url
    finally:
        built.service.party.db.dispose()
        for held in built.held:
            if hasattr(held, "close"):
                held.close()


def _references(page: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(page)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_documentation_pages_use_only_the_services_own_assets(service: str, page: str) -> None:
    with _http(service) as http:
        answer = http.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        references = _references(answer.text)
        assert any(r.endswith(".js") for r in references), answer.text
        assert "/openapi.json" in answer.text
        for reference in references:
            absolute = urljoin(f"{service}{page}", reference)
            assert urlsplit(absolute).netloc == urlsplit(service).netloc, reference
            asset = http.get(absolute)
            assert asset.status_code == 200, reference
            suffix = Path(urlsplit(absolute).path).suffix
            assert asset.headers["content-type"].split(";")[0] in TYPES[suffix], reference
            assert len(asset.content) > 100, reference
        assert "cdn." not in answer.text and "fonts.googleapis" not in answer.text


def test_the_root_leads_to_the_documentation(service: str) -> None:
    with _http(service) as http:
        answer = http.get("/")
        assert answer.status_code in (302, 307)
        assert answer.headers["location"] == "/docs"
        assert http.get("/", follow_redirects=True).url.path == "/docs"


def test_a_missing_asset_is_a_problem_not_a_page(service: str) -> None:
    with _http(service) as http:
        answer = http.get("/static/docs/nothing.js")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "http.not_found"


def test_the_assets_are_in_the_wheel() -> None:
    """The wheel is built from the package folder: the assets must not be ignored by git
    (hatch leaves out what .gitignore names) and must sit inside the package."""
    import subprocess

    static = Path(__file__).resolve().parents[1] / "src" / "offpay" / "service" / "static"
    names = ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"]
    for name in names:
        assert (static / name).stat().st_size > 100
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *(str(static / n) for n in names)],
        capture_output=True,
        text=True,
        cwd=static,
    )
    assert ignored.stdout == "", ignored.stdout
