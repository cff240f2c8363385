"""Delivery in the browser: poll fallback, double submits, stream lifetimes."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.browser.test_chat import enter, send
from tests.conftest import Server, ServerFactory
from tests.proxies import ProxyThread


def message_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#timeline .entry").evaluate_all("els => els.map(e => e.id)")
    return ids


def test_behind_a_buffering_proxy_the_page_switches_to_poll_mode(
    browser: Browser, server: Server
) -> None:
    with ProxyThread(server.port, buffer=True) as proxy:
        direct = browser.new_context()
        proxied = browser.new_context()
        try:
            ana = direct.new_page()
            bo = proxied.new_page()
            code = enter(ana, server, "Ana")
            bo.goto(f"{proxy.url}/?code={code}")
            bo.get_by_label("Your name").fill("Bo")
            bo.get_by_role("button", name="Join").click()
            bo.wait_for_url("**/rooms/*")
            expect(bo.locator("#stream[data-mode=poll]")).to_have_count(1, timeout=10_000)
            for n in range(3):
                send(ana, f"through the buffer {n}")
            expect(bo.locator(".entry.message")).to_have_count(3, timeout=10_000)
            send(bo, "and back")
            expect(ana.locator(".entry.message")).to_have_count(4)
            expect(bo.locator(".entry.message")).to_have_count(4, timeout=10_000)
            ids = message_ids(bo)
            assert len(ids) == len(set(ids))
        finally:
            direct.close()
            proxied.close()


def test_double_clicking_send_sends_once(browser: Browser, server: Server) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        enter(page, server, "Ana")
        expect(page.locator(".entry.join")).to_have_count(1)
        page.get_by_label("Message").fill("only once please")
        page.get_by_role("button", name="Send").dblclick()
        expect(page.locator(".entry.message")).to_have_count(1)
        page.wait_for_timeout(1000)
        expect(page.locator(".entry.message")).to_have_count(1)
        page.reload()
        expect(page.locator(".entry.message")).to_have_count(1)
    finally:
        context.close()


def test_streams_that_end_themselves_resume_without_loss(
    browser: Browser, make_server: ServerFactory
) -> None:
    server = make_server(stream_max_seconds=1.5)
    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        ana, bo = context_a.new_page(), context_b.new_page()
        code = enter(ana, server, "Ana")
        enter(bo, server, "Bo", code)
        for n in range(8):
            send(ana if n % 2 else bo, f"tick {n}")
            ana.wait_for_timeout(500)
        for page in (ana, bo):
            expect(page.locator(".entry.message")).to_have_count(8, timeout=15_000)
            ids = message_ids(page)
            assert len(ids) == len(set(ids)) and ids == sorted(ids, key=lambda i: int(i[6:]))
        assert ana.locator(".entry.join").count() == 2
    finally:
        context_a.close()
        context_b.close()
