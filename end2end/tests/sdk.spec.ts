import { test, expect } from "@playwright/test";
import OpenAI from "openai";
import { TOKEN, reset } from "./helpers";

// The official OpenAI Node SDK against the gateway, changed only in its base
// URL: what a support bot written against the OpenAI API sees. No browser.

const base = process.env.CHAOSAI_URL ?? "http://127.0.0.1:3000";
const admin = { authorization: `Bearer ${TOKEN}` };

function sdk(apiKey = "unused-without-client-keys") {
  // No retries: a test must see the gateway's own answer, not the SDK's second try.
  return new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
}

const orderTool: OpenAI.Chat.Completions.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_order_status",
    description: "Looks up the status of a customer's order by its number",
    parameters: {
      type: "object",
      properties: { order_id: { type: "string", description: "The order number" } },
      required: ["order_id"],
    },
  },
};

test.beforeEach(async ({ request }) => {
  await reset(request);
});

test("a plain question, whole and streamed, with usage", async () => {
  const client = sdk();
  const whole = await client.chat.completions.create({
    model: "chaosai",
    messages: [{ role: "user", content: "How do I reset my password?" }],
  });
  expect(whole.id).toMatch(/^chatcmpl-/);
  expect(whole.choices[0].message.content).toContain("reset link");
  expect(whole.choices[0].finish_reason).toBe("stop");
  expect(whole.usage!.total_tokens).toBe(whole.usage!.prompt_tokens + whole.usage!.completion_tokens);
  expect(whole.usage!.completion_tokens).toBeGreaterThan(10);

  const stream = await client.chat.completions.create({
    model: "gpt",
    messages: [{ role: "user", content: "Can I get a refund?" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | null | undefined;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? "";
      finish = chunk.choices[0].finish_reason ?? finish;
      expect(chunk.usage ?? null).toBeNull();
    } else {
      usage = chunk.usage;
    }
  }
  expect(chunks).toBeGreaterThan(5);
  expect(text).toContain("refund");
  expect(finish).toBe("stop");
  expect(usage!.prompt_tokens).toBeGreaterThan(0);
  expect(usage!.completion_tokens).toBeGreaterThan(10);
});

test("a tool-call round trip, streamed and assembled by the SDK's own helper", async () => {
  const client = sdk();
  const question: OpenAI.Chat.Completions.ChatCompletionMessageParam = {
    role: "user",
    content: "Where is my order 12345?",
  };
  for (const model of ["claude", "gpt"]) {
    // The SDK's stream runner assembles tool-call fragments itself: if our
    // fragments were not OpenAI's, its final message would be wrong.
    const runner = client.chat.completions.stream({
      model,
      messages: [question],
      tools: [orderTool],
      stream_options: { include_usage: true },
    });
    const completion = await runner.finalChatCompletion();
    const message = completion.choices[0].message;
    expect(completion.choices[0].finish_reason).toBe("tool_calls");
    expect(message.tool_calls).toHaveLength(1);
    const call = message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(call.function.name).toBe("get_order_status");
    expect(JSON.parse(call.function.arguments)).toEqual({ order_id: "12345" });
    expect(completion.usage!.total_tokens).toBeGreaterThan(0);

    const answer = await client.chat.completions.create({
      model,
      tools: [orderTool],
      messages: [
        question,
        message,
        { role: "tool", tool_call_id: call.id, content: JSON.stringify({ status: "shipped", eta: "Friday" }) },
      ],
    });
    expect(answer.choices[0].finish_reason).toBe("stop");
    expect(answer.choices[0].message.content).toContain("status shipped");
  }
});

test("a customer's screenshot, sent as the SDK types it, reaches a model that can look", async () => {
  const client = sdk();
  // A 1×1 PNG in a data URL, and a 2 MB screenshot (a PNG's first bytes, then
  // its size in filler) as a support widget sends one pasted: the shipped
  // limits take it.
  const pixel =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";
  const png = `data:image/png;base64,${pixel}`;
  const screenshot = Buffer.concat([Buffer.from(pixel, "base64"), Buffer.alloc(2 << 20, 7)]);
  const shot = `data:image/png;base64,${screenshot.toString("base64")}`;
  for (const [model, url] of [
    ["claude", png],
    ["chaosai", shot],
  ]) {
    const answer = await client.chat.completions.create({
      model,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Can I get a refund?" },
            { type: "image_url", image_url: { url, detail: "high" } },
          ],
        },
      ],
    });
    expect(answer.choices[0].message.content).toMatch(/^I looked at the picture you sent \(a PNG\)\./);
    expect(answer.usage!.prompt_tokens).toBeGreaterThan(765);
  }
  // Llama is text-only: asked alone, it is a BadRequestError naming what it cannot take.
  const blind = await client.chat.completions
    .create({
      model: "llama",
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: png } }] }],
    })
    .catch((e) => e);
  expect(blind).toBeInstanceOf(OpenAI.BadRequestError);
  expect(blind.param).toBe("image_url");
});

test("the Responses API: create, the stream helper's final response, a function call, and going on from a kept response", async () => {
  const client = sdk();
  const whole = await client.responses.create({
    model: "chaosai",
    instructions: "Be brief.",
    input: "How do I reset my password?",
  });
  expect(whole.id).toMatch(/^resp_/);
  expect(whole.status).toBe("completed");
  // output_text is the SDK's own join of the output's text parts.
  expect(whole.output_text).toContain("reset link");
  expect(whole.usage!.total_tokens).toBe(whole.usage!.input_tokens + whole.usage!.output_tokens);

  // The stream helper rebuilds the response from the events and throws on any
  // event out of its expected order.
  const runner = client.responses.stream({ model: "gpt", input: "Can I get a refund?" });
  let deltas = "";
  runner.on("response.output_text.delta", (event) => {
    deltas += event.delta;
  });
  const streamed = await runner.finalResponse();
  expect(streamed.status).toBe("completed");
  // The helper adds no output_text (against OpenAI neither): read the message.
  const message = streamed.output.find((item) => item.type === "message") as OpenAI.Responses.ResponseOutputMessage;
  const text = (message.content[0] as OpenAI.Responses.ResponseOutputText).text;
  expect(text).toContain("refund");
  expect(deltas).toBe(text);

  const tools: OpenAI.Responses.Tool[] = [
    {
      type: "function",
      name: "get_order_status",
      description: "Looks up the status of a customer's order by its number",
      parameters: { type: "object", properties: { order_id: { type: "string" } }, required: ["order_id"] },
      strict: false,
    },
  ];
  const question: OpenAI.Responses.ResponseInputItem = { role: "user", content: "Where is my order 12345?" };
  const calling = await client.responses.create({ model: "claude", tools, input: [question] });
  const call = calling.output.find((item) => item.type === "function_call") as OpenAI.Responses.ResponseFunctionToolCall;
  expect(call.name).toBe("get_order_status");
  expect(JSON.parse(call.arguments)).toEqual({ order_id: "12345" });
  const answered = await client.responses.create({
    model: "claude",
    tools,
    input: [
      question,
      ...(calling.output as OpenAI.Responses.ResponseInputItem[]),
      { type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ status: "shipped" }) },
    ],
  });
  expect(answered.output_text).toContain("status shipped");

  // The same round trip sending only what is new: the gateway kept the first
  // response (store is on by default) and puts its conversation first.
  const goneOn = await client.responses.create({
    model: "gpt",
    tools,
    previous_response_id: calling.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ status: "shipped" }) }],
  });
  expect(goneOn.previous_response_id).toBe(calling.id);
  expect(goneOn.output_text).toContain("status shipped");
  const read = await client.responses.retrieve(goneOn.id);
  expect(read.output_text).toBe(goneOn.output_text);
  await client.responses.delete(goneOn.id);
  const gone = await client.responses.retrieve(goneOn.id).catch((e) => e);
  expect(gone).toBeInstanceOf(OpenAI.NotFoundError);
});

test("errors are the SDK's own error classes, naming the parameter", async () => {
  const client = sdk();
  const bad = await client.chat.completions
    .create({ model: "chaosai", temperature: 5, messages: [{ role: "user", content: "hi" }] })
    .catch((e) => e);
  expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
  expect(bad.status).toBe(400);
  expect(bad.param).toBe("temperature");

  const unknown = await client.chat.completions
    .create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] })
    .catch((e) => e);
  expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
  expect(unknown.code).toBe("model_not_found");

  // models.retrieve, which bots call at start-up to check their configured model.
  const model = await client.models.retrieve("chaosai");
  expect(model.id).toBe("chaosai");
  expect(model.object).toBe("model");
  const missing = await client.models.retrieve("no-such-model").catch((e) => e);
  expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
  expect(missing.code).toBe("model_not_found");

  const many = await client.chat.completions
    .create({ model: "chaosai", n: 2, messages: [{ role: "user", content: "hi" }] })
    .catch((e) => e);
  expect(many).toBeInstanceOf(OpenAI.BadRequestError);
  expect(many.param).toBe("n");
});

test("client keys: a wrong key is an AuthenticationError, a spent limit a RateLimitError", async ({ request }) => {
  const made = await request.post("/api/clients", {
    headers: admin,
    data: { name: "sdk-bot", tenant: "sdk-shop", rpm: 1 },
  });
  expect(made.status()).toBe(201);
  const { key } = await made.json();
  try {
    const wrong = await sdk("sk-wrong")
      .chat.completions.create({ model: "chaosai", messages: [{ role: "user", content: "hi" }] })
      .catch((e) => e);
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);

    const client = sdk(key);
    const first = await client.chat.completions.create({
      model: "chaosai",
      messages: [{ role: "user", content: "How do I reset my password?" }],
    });
    expect(first.choices[0].message.content).toContain("reset link");
    const limited = await client.chat.completions
      .create({ model: "chaosai", messages: [{ role: "user", content: "And my email?" }] })
      .catch((e) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
  } finally {
    // With no key left, /v1 is open again for the other suites.
    expect((await request.delete("/api/clients/sdk-bot", { headers: admin })).status()).toBe(204);
  }
});

// Chromium itself enforcing CORS: a page on one origin calling /v1 on another
// (127.0.0.1 and localhost are different origins of the same server). The e2e
// script lists the 127.0.0.1 origin in CHAOSAI_API_ORIGINS.
test("a page on another site: listed sites and keyed calls may read /v1, others are stopped", async ({ page, request }) => {
  const other = base.replace("127.0.0.1", "localhost");
  const call = (target: string, key?: string) =>
    page.evaluate(
      async ({ target, key }) => {
        try {
          const res = await fetch(`${target}/v1/chat/completions`, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              ...(key ? { authorization: `Bearer ${key}` } : {}),
            },
            body: JSON.stringify({
              model: "chaosai",
              messages: [{ role: "user", content: "How do I reset my password?" }],
            }),
          });
          const body = await res.json();
          return { status: res.status, servedBy: res.headers.get("x-chaosai-served-by"), body };
        } catch (err) {
          return { error: String(err) };
        }
      },
      { target, key },
    );

  // The listed site (127.0.0.1) reads the answer and the gateway's headers.
  await page.goto("/");
  const listed: any = await call(other);
  expect(listed.status).toBe(200);
  expect(listed.servedBy).toBe("claude");
  expect(listed.body.choices[0].message.content).toContain("reset link");

  // A site nobody listed (localhost) is stopped by the browser while no key is needed.
  await page.goto(`${other}/`);
  const foreign: any = await call(base);
  expect(foreign.error).toContain("Failed to fetch");

  // Once keys are required, any site may call with its key.
  const made = await request.post("/api/clients", {
    headers: admin,
    data: { name: "web-bot", tenant: "web-shop" },
  });
  expect(made.status()).toBe(201);
  const { key } = await made.json();
  try {
    const keyed: any = await call(base, key);
    expect(keyed.status).toBe(200);
    expect(keyed.body.choices[0].message.content).toContain("reset link");
    const keyless: any = await call(base);
    expect(keyless.status).toBe(401);
    expect(keyless.body.error.code).toBe("invalid_api_key");
  } finally {
    expect((await request.delete("/api/clients/web-bot", { headers: admin })).status()).toBe(204);
  }
});
