"""The dashboard in a real headless Chromium: what a person running a workflow sees and does."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Dialog, Page, expect

from tests.support.dashboard import SECRET, Dashboard, wait_for

WAIT_MS = 15_000


async def log_in(page: Page, dashboard: Dashboard, role: str, *, start: str = "/") -> None:
    page.set_default_timeout(WAIT_MS)
    await page.goto(dashboard.url + start)
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.fill("#key", dashboard.keys[role])
    await page.click("button[type=submit]")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def test_a_manager_sees_a_failed_delivery_redelivers_it_and_the_new_attempt_appears(
    browser: Browser, dashboard: Dashboard
) -> None:
    page = await browser.new_page()
    await log_in(page, dashboard, "manager")

    await page.get_by_role("link", name="Streets").click()
    graph = page.locator("svg.graph")
    await expect(graph.locator("g.stage")).to_have_count(5)
    await expect(graph.locator("g.stage[data-stage=review] .count")).to_have_text("1 task")
    await expect(graph.locator(".wire-label")).to_have_text(["accept", "reject"])

    await page.locator("tr[data-stage=review]").get_by_role("link", name="1").click()
    await page.get_by_role("link", name="street-0001.jpg").click()
    card = page.locator(f"#delivery-{dashboard.delivery_id}")
    await expect(card).to_have_attribute("data-state", "failed")
    await expect(card.locator("tr.attempt")).to_have_count(1)
    await expect(card.locator("tr.attempt .code")).to_have_text("500")
    await expect(card.locator("tr.attempt .response")).to_have_text(
        "receiver says no: model offline"
    )
    await expect(page.locator("svg.overlay rect.shape")).to_have_count(1)

    await page.get_by_role("link", name="Streets").click()
    await page.locator("tr[data-stage=webhook]").get_by_role("link", name="Webhook").click()
    await page.get_by_role("link", name=re.compile(r"^failed 1")).click()
    dashboard.receiver.status = 200
    confirmations: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        await dialog.accept()

    page.once("dialog", confirm)
    await card.get_by_role("link", name="Redeliver").click()

    # The card swaps in place, then refreshes itself until the new attempt is recorded.
    await expect(card.locator("tr.attempt")).to_have_count(2, timeout=WAIT_MS)
    await expect(card.locator("tr.attempt .code")).to_have_text(["500", "200"])
    await expect(card).to_have_attribute("data-state", "delivered", timeout=WAIT_MS)
    assert confirmations == [
        f"Send delivery {dashboard.delivery_id} again, with the same id and the same bytes?"
    ]
    await expect(page.locator("#log pre")).to_contain_text("[200] street-0001.jpg", timeout=WAIT_MS)
    assert dashboard.receiver.received == 2


async def test_without_javascript_every_page_reads_and_a_redelivery_goes_through_a_confirm_page(
    browser: Browser, dashboard: Dashboard
) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    stage = f"/projects/{dashboard.project_id}/stages/webhook"
    await log_in(page, dashboard, "manager", start=stage)
    await expect(page).to_have_url(dashboard.url + stage)  # back where the login began
    await expect(page.locator("table.settings")).to_contain_text("secret: set, …9c2e")
    await expect(page.locator("#log pre")).to_contain_text("[500] street-0001.jpg")
    await expect(page.locator("svg.chart")).to_have_count(2)

    pages = {
        "/": "Projects",
        f"/projects/{dashboard.project_id}": "Workflow",
        f"/projects/{dashboard.project_id}/tasks?stage=review": "Tasks in Review",
        f"/tasks/{dashboard.task_id}": "Stage history",
        stage: "Deliveries by status",
        f"/deliveries/{dashboard.delivery_id}": "Body",
    }
    for path, heading in pages.items():
        await page.goto(dashboard.url + path)
        await expect(page.get_by_role("heading", name=heading)).to_be_visible()
        html = await page.content()
        assert SECRET not in html
        assert not any(key in html for key in dashboard.keys.values())

    await page.goto(dashboard.url + stage)
    dashboard.receiver.status = 200
    card = page.locator(f"#delivery-{dashboard.delivery_id}")
    await card.get_by_role("link", name="Redeliver").click()
    await expect(page.get_by_role("heading", name=re.compile("again"))).to_be_visible()
    await page.get_by_role("button", name="Yes, send it again").click()
    await expect(page.get_by_role("status")).to_have_text(re.compile("^Queued"))

    await wait_for(dashboard.svc, dashboard.delivery_id, 2)
    await page.reload()
    await expect(card.locator("tr.attempt .code")).to_have_text(["500", "200"])


async def test_a_read_only_key_can_look_but_is_offered_no_action(
    browser: Browser, dashboard: Dashboard
) -> None:
    page = await browser.new_page()
    await log_in(page, dashboard, "read-only")
    await page.goto(f"{dashboard.url}/projects/{dashboard.project_id}/stages/webhook")
    card = page.locator(f"#delivery-{dashboard.delivery_id}")
    await expect(card.locator("tr.attempt")).to_have_count(1)
    await expect(page.get_by_role("link", name=re.compile("Redeliver|Re-run"))).to_have_count(0)

    await page.goto(f"{dashboard.url}/deliveries/{dashboard.delivery_id}/redeliver")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()

    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{dashboard.url}/login")
    await page.goto(f"{dashboard.url}/projects/{dashboard.project_id}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
