// cargo-leptos starts the server and the tests at the same moment: wait for /healthz.
export default async function globalSetup() {
  const base = process.env.CHAOSAI_URL ?? "http://127.0.0.1:3000";
  const deadline = Date.now() + 120_000;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${base}/healthz`);
      if (res.ok) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`server at ${base} never became ready: ${last}`);
}
