import { expect, Page, APIRequestContext } from "@playwright/test";

// The e2e script starts the server with this admin token and a 2 s breaker cool-down.
export const TOKEN = process.env.CHAOSAI_ADMIN_TOKEN ?? "e2e-admin-token-0123456789";
const admin = { authorization: `Bearer ${TOKEN}` };

/** Every test starts from a clean slate: no fault, nothing cached from another
 * test, and every breaker CLOSED again (background probes close them once healed). */
export async function reset(request: APIRequestContext) {
  expect((await request.delete("/api/chaos", { headers: admin })).ok()).toBeTruthy();
  expect((await request.delete("/api/cache", { headers: admin })).ok()).toBeTruthy();
  await expect
    .poll(async () => {
      const res = await request.get("/api/providers", { headers: admin });
      return (await res.json()).map((p: any) => p.state);
    }, { timeout: 30_000 })
    .toEqual(["closed", "closed", "closed"]);
}

/** Injects a fault through the chaos API. */
export async function inject(request: APIRequestContext, provider: string, spec: object) {
  const res = await request.put(`/api/chaos/${provider}`, { headers: admin, data: spec });
  expect(res.ok()).toBeTruthy();
}

/** One provider's status from the chaos API. */
export async function provider(request: APIRequestContext, name: string) {
  const res = await request.get("/api/providers", { headers: admin });
  expect(res.ok()).toBeTruthy();
  const all = await res.json();
  return all.find((p: any) => p.name === name);
}

/** How many answers the cache holds. */
export async function cacheEntries(request: APIRequestContext): Promise<number> {
  const res = await request.get("/api/cache", { headers: admin });
  expect(res.ok()).toBeTruthy();
  return (await res.json()).stats.entries;
}

/** Opens the chat page and waits until it is interactive. */
export async function openChat(page: Page) {
  await page.goto("/");
  await page.waitForFunction(() => (window as any).__chaosai_hydrated === true);
}

/** Asks a question in the chat and waits for the whole reply. */
export async function ask(page: Page, question: string) {
  await page.getByLabel("Your question").fill(question);
  await page.getByRole("button", { name: "Send" }).click();
  const reply = page.locator("li.bubble.assistant").last();
  await expect(reply).toHaveAttribute("data-state", "done", { timeout: 30_000 });
  return reply;
}
