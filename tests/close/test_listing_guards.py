"""Listing a user's links from a Close that never stops saying has_more: a real HTTP server
that misbehaves on purpose (an edge we do not own), and the real client against it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from service.close.client import CloseClient, CloseError, StaticToken
from service.close.ratelimit import LocalRateBudget

Page = Callable[[int, int], dict[str, Any]]  # (skip, limit) -> the answer's body


@pytest.fixture
def close_answering() -> Iterator[Callable[[Page], tuple[CloseClient, list[int]]]]:
    servers: list[ThreadingHTTPServer] = []
    http = requests.Session()

    def start(page: Page) -> tuple[CloseClient, list[int]]:
        skips: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                skip, limit = int(query["_skip"][0]), int(query["_limit"][0])
                skips.append(skip)
                body = json.dumps(page(skip, limit)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = CloseClient(
            api_url=f"http://127.0.0.1:{server.server_port}/api/v1",
            http=http,
            budget=LocalRateBudget(default_rate=1000),
            tokens=StaticToken("token"),
            org_id="orga_test",
            token_key="1",
        )
        return client, skips

    yield start
    http.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def links(start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": f"schedlink_{n}", "name": f"Link {n}"} for n in range(start, start + count)]


def test_a_listing_that_repeats_its_page_ends_there_without_duplicates(
    close_answering: Callable[[Page], tuple[CloseClient, list[int]]],
) -> None:
    """has_more stays true but the second page is the first again: the listing ends at the
    page that brought nothing new, each link listed once."""
    client, skips = close_answering(
        lambda _skip, limit: {"data": links(0, limit), "has_more": True}
    )
    listed = list(client.iter_links(page_size=3))
    assert [link["id"] for link in listed] == ["schedlink_0", "schedlink_1", "schedlink_2"]
    assert skips == [0, 3]


def test_a_listing_that_overlaps_keeps_only_new_links_and_goes_on(
    close_answering: Callable[[Page], tuple[CloseClient, list[int]]],
) -> None:
    """Pages that overlap (a link inserted between two requests shifts the window) still
    bring new links: those are kept, the repeated ones dropped, and the listing goes on."""

    def page(skip: int, limit: int) -> dict[str, Any]:
        start = max(0, skip - 1)  # each page repeats the previous page's last link
        count = min(limit, 7 - start)  # seven links in all
        return {"data": links(start, count), "has_more": start + count < 7}

    client, _ = close_answering(page)
    listed = [link["id"] for link in client.iter_links(page_size=3)]
    assert listed == [f"schedlink_{n}" for n in range(7)]
    assert len(set(listed)) == len(listed)


def test_a_listing_that_never_ends_stops_at_max_pages_with_an_error(
    close_answering: Callable[[Page], tuple[CloseClient, list[int]]],
) -> None:
    """Fresh links on every page and has_more forever: the client stops at max_pages and
    says so (an error, not a silent truncation the sync would take for the whole list)."""
    client, skips = close_answering(
        lambda skip, limit: {"data": links(skip, limit), "has_more": True}
    )
    listed: list[str] = []
    with pytest.raises(CloseError, match="more than 4 pages"):
        for link in client.iter_links(page_size=2, max_pages=4):
            listed.append(link["id"])
    assert listed == [f"schedlink_{n}" for n in range(8)]
    assert skips == [0, 2, 4, 6]
