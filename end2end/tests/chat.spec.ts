import { test, expect } from "@playwright/test";
import { ask, cacheEntries, inject, openChat, reset } from "./helpers";

test.beforeEach(async ({ request }) => {
  await reset(request);
});

test("the chat page renders without waiting for WASM", async ({ request }) => {
  const res = await request.get("/");
  expect(res.status()).toBe(200);
  const html = await res.text();
  expect(html).toContain("Acme Shop support");
  expect(html).toContain('id="question"');
});

test("a question is answered token by token and names who served it", async ({ page }) => {
  // Hydration attaches the submit handler; wait until the WASM bundle has run.
  await openChat(page);

  // The cache was emptied before the test, so a provider streams the answer.
  await page.getByLabel("Your question").fill("How do I change my email address?");
  await page.getByRole("button", { name: "Send" }).click();

  const reply = page.locator("li.bubble.assistant").last();
  // Sample the reply's text while it streams: a streamed answer shows several
  // different partial texts before it is done.
  const seen = new Set<string>();
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const text = (await reply.locator(".text").textContent()) ?? "";
    if (text) seen.add(text);
    if ((await reply.getAttribute("data-state")) === "done") break;
    await page.waitForTimeout(15);
  }
  await expect(reply).toHaveAttribute("data-state", "done");
  expect(seen.size).toBeGreaterThan(1);
  await expect(reply.locator(".text")).toContainText("confirmation link");
  await expect(reply.locator(".served-by")).toHaveText("claude");
  await expect(reply.locator(".elapsed")).toContainText(" s");

  // The history travels with the next question: a follow-up without a topic of
  // its own is answered about the earlier one.
  await page.getByLabel("Your question").fill("and what if that does not work?");
  await page.getByRole("button", { name: "Send" }).click();
  const followUp = page.locator("li.bubble.assistant").nth(1);
  await expect(followUp).toHaveAttribute("data-state", "done");
  await expect(followUp.locator(".text")).toContainText("Following up on your earlier question");
});

test("a paraphrase in a new conversation is answered from the cache", async ({ page, context }) => {
  // Someone asks first; the answer is stored after it was sent.
  await openChat(page);
  const first = await ask(page, "How do I change my email address?");
  await expect(first.locator(".served-by")).toHaveText("claude");
  await expect.poll(() => cacheEntries(page.request)).toBe(1);
  // Someone else, in a new conversation, asks the same in other words.
  const other = await context.newPage();
  await openChat(other);
  const reply = await ask(other, "How can I update my email address?");
  await expect(reply.locator(".served-by")).toHaveText("cache");
  await expect(reply.locator(".text")).toContainText("confirmation link");
});

test("a reply cut mid-stream that nobody can continue is restarted whole, never doubled", async ({ page, context, request }) => {
  // The whole answer, once, from a healthy primary.
  await openChat(page);
  const question = "I want to return an item";
  const whole = (await (await ask(page, question)).locator(".text").textContent()) ?? "";
  expect(whole.length).toBeGreaterThan(100);

  // The primary's connection drops mid-answer; the next provider cannot
  // continue a partial answer, so the chat starts the reply over.
  await reset(request);
  await inject(request, "claude", { kind: "reset", after_bytes: 900 });
  const chat = await context.newPage();
  await openChat(chat);
  const reply = await ask(chat, question);
  await expect(reply.locator(".note")).toContainText("Answer restarted");
  await expect(reply.locator(".served-by")).toHaveText("gpt");
  expect(await reply.locator(".text").textContent()).toBe(whole);
  await chat.screenshot({ path: "screenshots/chat-restarted.png", fullPage: true });
});
