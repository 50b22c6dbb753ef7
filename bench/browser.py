"""What a member's browser does before chatting, over HTTP, for the load client
(`bench/load_client.py`): log in with the login form, and start a chat with the home page's form.

A member logs in once (`log_in`, a phase of its own before the runs: the password hash is
CPU the members pay once, not per chat); each run then opens the home page, posts its
"start a chat" form, loads the chat page the redirect names, and hands the load client the
socket path, the session's cookies and what the page showed, for the `sync` a page sends after
connecting. The websocket itself stays the load client's lean one.

httpx is used here for its cookies and forms; none of this runs while a burst is measured.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_MESSAGE_ID = re.compile(r'\bdata-id="(\d+)"')
_CHAT_PATH = re.compile(r"^/conversations/(\d+)/$")


class BrowserError(Exception):
    """A step a browser would have shown as an error page (or a wrong redirect)."""


def _client(target: dict, cookies: dict | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{target['host']}:{target['port']}",
        # A browser sends its page's origin with every form post (Django's CSRF check reads it).
        headers={"Origin": target["origin"], "User-Agent": "serika-bench-browser"},
        cookies=cookies,
        timeout=120,
        # One connection per member, kept alive, as a browser tab's requests share one.
        limits=httpx.Limits(max_connections=1),
    )


def _cookies(client: httpx.AsyncClient) -> dict:
    """The client's cookies as a browser holds them: one value per name, the newest. (Django
    sets csrftoken again with every page that has a form; httpx keeps both copies when the
    first one was given without a domain.)"""
    return {cookie.name: cookie.value for cookie in client.cookies.jar}


def _csrf_token(response: httpx.Response, step: str) -> str:
    if response.status_code != 200:
        raise BrowserError(f"{step}: HTTP {response.status_code}")
    found = _CSRF_INPUT.search(response.text)
    if not found:
        raise BrowserError(f"{step}: no form on the page")
    return found.group(1)


async def log_in(target: dict, username: str, password: str) -> dict:
    """The login page, then its form: the session's cookies (sessionid, csrftoken)."""
    async with _client(target) as client:
        token = _csrf_token(await client.get("/login/"), "login page")
        response = await client.post(
            "/login/",
            data={
                "csrfmiddlewaretoken": token,
                "username": username,
                "password": password,
                "next": "/",
            },
            headers={"Referer": f"{target['origin']}/login/"},
        )
        if response.status_code != 302 or "sessionid" not in client.cookies:
            raise BrowserError(f"login: HTTP {response.status_code}, no session")
        return _cookies(client)


async def start_chat(target: dict, character_id: int) -> dict:
    """The home page, its "start a chat" form with the character, then the chat page.

    Returns the socket's `path`, its `cookie` header, and the `sync` frame the page sends.
    """
    async with _client(target, target["cookies"]) as client:
        token = _csrf_token(await client.get("/"), "home page")
        response = await client.post(
            "/conversations/new/",
            data={"csrfmiddlewaretoken": token, "character": str(character_id)},
            headers={"Referer": f"{target['origin']}/"},
        )
        location = response.headers.get("location", "")
        found = _CHAT_PATH.match(location)
        if response.status_code != 302 or not found:
            raise BrowserError(f"start chat: HTTP {response.status_code} to {location!r}")
        page = await client.get(location)
        if page.status_code != 200:
            raise BrowserError(f"chat page: HTTP {page.status_code}")
        shown = [int(pk) for pk in _MESSAGE_ID.findall(page.text)]
        cookie = "; ".join(f"{name}={value}" for name, value in _cookies(client).items())
    return {
        "path": f"/ws/conversations/{found.group(1)}/",
        "cookie": cookie,
        "sync": {"type": "sync", "after": max(shown, default=0), "have": shown},
    }


async def for_each(targets: list[dict], step, concurrency: int) -> tuple[list, list[str], list]:
    """`step(target)` for every target, `concurrency` at a time: results (None where it
    failed), the errors, and each step's duration in seconds."""
    limit = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    durations: list[float] = []

    async def one(i: int, target: dict):
        async with limit:
            started = time.perf_counter()
            try:
                return await step(target)
            except (BrowserError, httpx.HTTPError) as exc:
                errors.append(f"browser {i}: {exc!r}")
                return None
            finally:
                durations.append(time.perf_counter() - started)

    results = await asyncio.gather(*(one(i, t) for i, t in enumerate(targets)))
    return list(results), errors, durations
