import { test, expect, Page } from "@playwright/test";
import { TOKEN, ask, openChat, reset } from "./helpers";

/** Logs in as the board's form does (the token in a POST body), then opens `path`. */
async function openBoard(page: Page, path = "/chaos") {
  await page.goto("/chaos");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Open the board" }).click();
  await expect(page).toHaveURL(/\/chaos$/);
  if (path !== "/chaos") await page.goto(path);
  await page.waitForFunction(() => (window as any).__chaosai_hydrated === true);
  await expect(page.locator(".link")).toHaveText(/live/i);
  await expect(page.locator(".card")).toHaveCount(3);
}

test.beforeEach(async ({ request }) => {
  await reset(request);
});

test("the board needs the admin token, and never takes it in a URL", async ({ browser }) => {
  const page = await browser.newPage();
  await page.goto("/chaos");
  await expect(page.getByLabel("Admin token")).toBeVisible();
  // A wrong token: back to the form, told so.
  await page.getByLabel("Admin token").fill("not-the-admin-token");
  await page.getByRole("button", { name: "Open the board" }).click();
  await expect(page.getByRole("alert")).toContainText("not the admin token");
  await expect(page.getByLabel("Admin token")).toBeVisible();
  // The token in a URL is refused outright.
  const res = await page.request.get(`/chaos/login?token=${TOKEN}`);
  expect(res.status()).toBe(400);
  await page.close();
});

test("outage on the primary: the chat falls over, the light turns OPEN, healing closes it", async ({ page, context }) => {
  await openBoard(page);
  const claude = page.locator('.card[data-provider="claude"]');
  await expect(claude.locator(".state")).toHaveText("CLOSED");

  await claude.getByRole("button", { name: "Outage 503" }).click();
  await expect(claude.locator(".fault")).toContainText("Outage 503");

  // The customer, in another tab, asks while the primary is down.
  const chat = await context.newPage();
  await openChat(chat);
  for (const question of ["Where is my order?", "Can I get a refund?", "How much is shipping?"]) {
    const reply = await ask(chat, question);
    await expect(reply.locator(".served-by")).toHaveText("gpt");
  }
  // Three failures: the board shows the breaker OPEN, by word and light.
  await expect(claude).toHaveAttribute("data-state", "open", { timeout: 5_000 });
  await expect(claude.locator(".state")).toHaveText("OPEN");
  await expect(page.locator(".traces li").first()).toContainText("gpt ✓");
  await expect(page.locator(".customer-errors")).toHaveText("0");
  await page.screenshot({ path: "screenshots/board-outage.png", fullPage: true });

  // Heal; after the cool-down a background probe closes the breaker: no
  // customer's question is spent finding out.
  await claude.getByRole("button", { name: "Heal" }).click();
  await expect(claude.locator(".fault")).toHaveText("none");
  await expect(claude.locator(".state")).toHaveText("CLOSED", { timeout: 15_000 });
  // A question nobody asked before, so the cache cannot answer it instead.
  const reply = await ask(chat, "Which payment methods do you accept?");
  await expect(reply.locator(".served-by")).toHaveText("claude");
  const timeline = page.locator(".transitions");
  await expect(timeline).toContainText("claude OPEN → HALF-OPEN");
  await expect(timeline).toContainText("claude HALF-OPEN → CLOSED");
  await page.screenshot({ path: "screenshots/board-healed.png", fullPage: true });
});

test("total blackout: the customer still gets a reply and a ticket the audit lists", async ({ page }) => {
  await openBoard(page, "/demo");
  // The counters cover the last ten minutes of the audit, earlier tests included.
  const before = Number(await page.locator(".last-resort-count").textContent());
  await page.getByRole("button", { name: "Total blackout" }).click();
  await expect(page.locator('.card[data-provider="llama"] .fault')).toContainText("Outage 503");
  const reply = await ask(page, "My blender makes a strange noise");
  await expect(reply.locator(".served-by")).toHaveText("last-resort");
  const text = (await reply.locator(".text").textContent()) ?? "";
  const ticket = text.match(/T-[A-Z0-9]{8}/)?.[0];
  expect(ticket, text).toBeTruthy();
  await expect(page.locator(".last-resort-count")).toHaveText(String(before + 1));
  await page.screenshot({ path: "screenshots/demo-blackout.png", fullPage: true });

  await page.goto("/audit");
  await expect(page.locator(".tickets")).toContainText(ticket!);
  await expect(page.locator(".tickets")).toContainText("My blender makes a strange noise");
});

test("the board reconnects by itself when the event stream drops", async ({ page }) => {
  let server: { close: () => Promise<void> } | undefined;
  await page.routeWebSocket("/ws/events", (ws) => {
    server = ws.connectToServer();
  });
  await openBoard(page);
  await server!.close();
  await expect(page.locator(".link")).toHaveText(/reconnecting/i);
  await expect(page.locator(".link")).toHaveText(/live/i, { timeout: 10_000 });
  // And it is truly live again: a fault set now shows up.
  const res = await page.request.put("/api/chaos/gpt", {
    headers: { authorization: `Bearer ${TOKEN}` },
    data: { kind: "hang" },
  });
  expect(res.ok()).toBeTruthy();
  await expect(page.locator('.card[data-provider="gpt"] .fault')).toContainText("Hang");
});

test("the board works at phone width", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await openBoard(page);
  const box = await page.locator('.card[data-provider="claude"]').boundingBox();
  expect(box!.width).toBeLessThanOrEqual(390);
  await page.screenshot({ path: "screenshots/board-phone.png", fullPage: true });
});

test("the traffic button starts and stops synthetic customers", async ({ page }) => {
  await openBoard(page);
  const answered = page.locator(".answered");
  const before = Number(await answered.textContent());
  await page.getByRole("button", { name: "Start traffic" }).click();
  await expect(page.getByRole("button", { name: "Stop traffic" })).toHaveAttribute("aria-pressed", "true");
  await expect.poll(async () => Number(await answered.textContent()), { timeout: 10_000 }).toBeGreaterThan(before + 3);
  await page.getByRole("button", { name: "Stop traffic" }).click();
  await expect(page.getByRole("button", { name: "Start traffic" })).toHaveAttribute("aria-pressed", "false");
  // Stopped: once nothing is in flight, every question asked was answered and no more come.
  const status = page.locator(".traffic-status");
  await expect(status).toHaveAttribute("data-in-flight", "0", { timeout: 10_000 });
  const asked = Number(await status.getAttribute("data-asked"));
  await expect.poll(async () => Number(await answered.textContent())).toBe(before + asked);
  expect(Number(await status.getAttribute("data-asked"))).toBe(asked);
});

test("a reload mid-outage loses nothing the presenter was pointing at", async ({ page, request }) => {
  await openBoard(page);
  const claude = page.locator('.card[data-provider="claude"]');
  await claude.getByRole("button", { name: "Outage 503" }).click();
  // Customers keep asking through the API while the primary is down.
  for (const question of ["Where is my parcel?", "Can I change my address?", "Is the blender in stock?", "Do you ship abroad?"]) {
    const res = await request.post("/v1/chat/completions", {
      data: { model: "chaosai", messages: [{ role: "user", content: question }] },
    });
    expect(res.ok()).toBeTruthy();
  }
  await expect(claude).toHaveAttribute("data-state", "open", { timeout: 5_000 });
  const answered = Number(await page.locator(".answered").textContent());
  expect(answered).toBeGreaterThanOrEqual(4);
  await page.screenshot({ path: "screenshots/board-mid-outage.png", fullPage: true });

  // The page as the server renders it, before any WASM: the OPEN card and its reason.
  const html = await (await page.request.get("/chaos")).text();
  expect(html).toContain('data-provider="claude"');
  expect(html).toMatch(/data-state="open"/);

  await page.reload();
  await page.waitForFunction(() => (window as any).__chaosai_hydrated === true);
  await expect(claude).toHaveAttribute("data-state", "open");
  // The breaker may have probed (and failed) since: either reason is the truth.
  await expect(claude.locator(".open-reason")).toHaveText(/consecutive failures|probe failed/);
  await expect(claude.locator(".fault")).toContainText("Outage 503");
  // Earlier successes in the last minute count too: the rate is not zero, and it survives.
  await expect(claude.locator(".error-rate")).toHaveText(/^[1-9]\d*% of \d+/);
  await expect(page.locator(".answered")).toHaveText(String(answered));
  await expect(page.locator(".transitions")).toContainText("claude CLOSED → OPEN");
  await expect(page.locator(".traces li").first()).toContainText("gpt ✓");
  await expect(page.locator(".incident-events")).toContainText("claude: fault injected (outage)");
  await expect(page.locator(".link")).toHaveText(/live/i);
  await page.screenshot({ path: "screenshots/board-after-reload.png", fullPage: true });
});
