import { test, expect, Page } from "@playwright/test";
import { TOKEN, reset } from "./helpers";

const admin = { authorization: `Bearer ${TOKEN}` };

async function login(page: Page) {
  await page.goto("/chaos");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Open the board" }).click();
  await expect(page).toHaveURL(/\/chaos$/);
}

test.beforeEach(async ({ request }) => {
  await reset(request);
});

test("the audit page answers a support lead: filter, open a request, export, resolve a ticket", async ({ page, request }) => {
  // An outage on the primary, then on everyone: failovers and a ticket.
  await request.put("/api/chaos/claude", { headers: admin, data: { kind: "outage" } });
  for (const q of ["Where is my order?", "Can I get a refund?", "How do I reset my password?"]) {
    expect((await request.post("/v1/chat/completions", { data: { model: "chaosai", messages: [{ role: "user", content: q }] } })).ok()).toBeTruthy();
  }
  for (const p of ["gpt", "llama"]) {
    await request.put(`/api/chaos/${p}`, { headers: admin, data: { kind: "outage" } });
  }
  const blackout = await request.post("/v1/chat/completions", {
    data: { model: "chaosai", messages: [{ role: "user", content: "My kettle leaks water" }] },
  });
  const ticket = blackout.headers()["x-chaosai-ticket"];
  expect(ticket).toMatch(/^T-/);
  await request.delete("/api/chaos", { headers: admin });

  await login(page);
  await page.goto("/audit");
  await page.waitForFunction(() => (window as any).__chaosai_hydrated === true);
  await expect(page.locator("table.requests tbody tr").first()).toBeVisible();
  await expect(page.locator(".incident-events")).toContainText("claude: fault injected (outage)");
  await expect(page.locator("table.by-provider")).toContainText("gpt");
  await page.screenshot({ path: "screenshots/audit.png", fullPage: true });

  // Filter by provider and route, from the keyboard.
  await page.getByLabel("Served by").fill("last-resort");
  await page.getByLabel("Served by").press("Enter");
  await expect(page).toHaveURL(/route=last-resort/);
  await expect(page.locator("table.requests tbody tr")).toHaveCount(1);
  await page.getByLabel("Served by").fill("gpt");
  await page.getByLabel("Provider attempted").fill("claude");
  await page.getByRole("button", { name: "Apply" }).click();
  await expect(page).toHaveURL(/provider=claude/);
  const rows = page.locator("table.requests tbody tr");
  await expect(rows).toHaveCount(3);
  await expect(rows.first().locator(".route")).toHaveText("gpt");

  // Open one request: its attempts and the breaker state each met.
  await rows.last().locator("a.open-request").click();
  const opened = page.locator(".opened");
  await expect(opened).toContainText("Request chatcmpl-");
  await expect(opened.locator('tr[data-outcome="server_error"]').first()).toBeVisible();
  await expect(opened).toContainText("CLOSED");
  await expect(opened.locator('tr[data-outcome="ok"]')).toContainText("gpt");

  // Export the current filter and check its rows.
  const href = await page.locator("a.export-csv").getAttribute("href");
  expect(href).toContain("provider=claude");
  const csv = await (await page.request.get(href!)).text();
  const lines = csv.trim().split("\n");
  expect(lines[0]).toContain("id,created_at_ms");
  expect(lines).toHaveLength(4);
  for (const line of lines.slice(1)) expect(line).toContain(",gpt,ok,");
  const jsonl = await (await page.request.get((await page.locator("a.export-jsonl").getAttribute("href"))!)).text();
  expect(jsonl.trim().split("\n").map((l) => JSON.parse(l).served_by)).toEqual(["gpt", "gpt", "gpt"]);

  // Open the ticket: the customer's words and what failed before the last resort.
  const row = page.locator(`tr[data-ticket="${ticket}"]`);
  const detail = page.locator(`tr[data-ticket-detail="${ticket}"]`);
  await expect(detail).toHaveCount(0);
  await row.getByRole("button", { name: "Conversation" }).click();
  await expect(row.getByRole("button", { name: "Conversation" })).toHaveAttribute("aria-expanded", "true");
  await expect(detail.locator('li[data-role="user"]')).toHaveText("user: My kettle leaks water");
  await expect(detail.locator(".attempts")).toContainText("gpt (server error, HTTP 503)");
  await expect(detail.locator(".attempts")).toContainText("llama");
  await detail.screenshot({ path: "screenshots/ticket-opened.png" });
  await row.getByRole("button", { name: "Conversation" }).click();
  await expect(detail).toHaveCount(0);

  // Mark the ticket resolved.
  await expect(row).toHaveAttribute("data-status", "open");
  await row.getByRole("button", { name: "Mark resolved" }).click();
  await expect(row).toHaveAttribute("data-status", "resolved");
  await expect(row.locator(".ticket-status")).toContainText("resolved at");
});

test("the audit page fits a phone", async ({ page }) => {
  await login(page);
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto("/audit");
  await page.waitForFunction(() => (window as any).__chaosai_hydrated === true);
  await expect(page.locator("table.requests")).toBeVisible();
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  // Name what sticks out, so a failure says where to look.
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > 376)
      // A table scrolls inside its box; what escapes that box widens the page.
      .filter((e) => !e.parentElement?.closest(".table-scroll") || getComputedStyle(e).position === "absolute")
      .slice(0, 8)
      .map((e) => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)})`),
  );
  expect(width, wide.join(", ")).toBeLessThanOrEqual(375);
  await page.screenshot({ path: "screenshots/audit-phone.png", fullPage: true });
});
