// Real webhook senders and a verifying target, run through the relay by
// relay-server/tests/real_senders.rs.
//
// The target (an HTTP server on 127.0.0.1, port 0) verifies every request with the provider's
// OFFICIAL library, chosen by the request path, over the raw body bytes it received. The sender
// side signs with the same official libraries and posts through the relay. A relay that changes
// one byte of a body, or a header a signature covers, makes a case fail.
//
// Protocol with the caller:
//   1. prints `TARGET_PORT=<port>` on stdout once the target listens;
//   2. reads one line from stdin: the relay's webhook base URL (`http://127.0.0.1:P/h/<channel>`);
//   3. prints one line per case, then `senders: <n> passed, <m> failed`;
//   4. exits 0 only if every case passed.
//
// Everything is bounded: one request by REQUEST_TIMEOUT_MS, the whole run by OVERALL_TIMEOUT_MS.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { createInterface } from "node:readline";

import { sign as githubSign, verify as githubVerify } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";

const OVERALL_TIMEOUT_MS = 30_000;
const REQUEST_TIMEOUT_MS = 10_000;

const overall = setTimeout(() => {
  console.error(`senders: gave up after ${OVERALL_TIMEOUT_MS} ms`);
  process.exit(3);
}, OVERALL_TIMEOUT_MS);

// Fresh secrets per run, in each provider's format.
const GITHUB_SECRET = randomBytes(20).toString("hex");
const STRIPE_SECRET = `whsec_${randomBytes(24).toString("hex")}`;
const STANDARD_SECRET = `whsec_${randomBytes(32).toString("base64")}`;

// Only the webhook helpers are used; no request is ever made to Stripe's API.
const stripe = new Stripe("sk_test_hookrelay_offline");
const standard = new Webhook(STANDARD_SECRET);

// What the target last received per case, so a failure can say which byte changed.
const received = new Map();

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

// GitHub's helpers take a string. Decode strictly (no U+FFFD substitution, BOM kept) so a
// relay that corrupts UTF-8 fails here instead of being papered over by the decoder.
const strictUtf8 = (bytes) => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);

const header = (req, name) => {
  const value = req.headers[name];
  if (typeof value !== "string") throw new Error(`missing or repeated header ${name}`);
  return value;
};

const githubDetails = (req, payload) => ({
  event: header(req, "x-github-event"),
  delivery: header(req, "x-github-delivery"),
  after: payload?.after,
});

// Each verifier gets the raw body and the request; it throws or returns details for the reply.
const verifiers = {
  async "/github"(body, req) {
    const raw = strictUtf8(body);
    if (!(await githubVerify(GITHUB_SECRET, raw, header(req, "x-hub-signature-256")))) {
      throw new Error("X-Hub-Signature-256 does not match the body");
    }
    return githubDetails(req, JSON.parse(raw));
  },
  async "/github-form"(body, req) {
    const raw = strictUtf8(body);
    if (!(await githubVerify(GITHUB_SECRET, raw, header(req, "x-hub-signature-256")))) {
      throw new Error("X-Hub-Signature-256 does not match the form body");
    }
    return githubDetails(req, JSON.parse(new URLSearchParams(raw).get("payload") ?? "null"));
  },
  async "/stripe"(body, req) {
    const event = stripe.webhooks.constructEvent(body, header(req, "stripe-signature"), STRIPE_SECRET);
    return { id: event.id, type: event.type };
  },
  async "/standard"(body, req) {
    const payload = standard.verify(body, req.headers);
    return { id: header(req, "webhook-id"), type: payload.type };
  },
  async "/binary"(body, req) {
    const expected = header(req, "x-test-sha256");
    if (sha256(body) !== expected) throw new Error("body sha256 differs from x-test-sha256");
    return { sha256: expected };
  },
};

const target = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("error", () => res.destroy());
  req.on("end", async () => {
    const body = Buffer.concat(chunks);
    const { pathname: path, search: query } = new URL(req.url, "http://target");
    received.set(path, { body, headers: req.headers, query });
    const reply = (status, value) => {
      const json = JSON.stringify({
        ...value,
        receivedBytes: body.length,
        receivedSha256: sha256(body),
      });
      res.writeHead(status, { "content-type": "application/json" }).end(json);
    };
    const verifier = verifiers[path];
    if (!verifier) return reply(404, { verified: false, error: `no verifier for ${path}` });
    try {
      reply(200, { verified: true, ...(await verifier(body, req)) });
    } catch (e) {
      reply(400, { verified: false, error: String(e?.message ?? e) });
    }
  });
});

// --- payloads -------------------------------------------------------------------------------

// A JSON re-serialiser would change all of this: odd spacing, CRLF and tabs, key order (b
// before a), a \u escape, a duplicate key, 1.0 and an integer beyond 2^53, a trailing newline.
// The commits make the body span several relay chunks (64 KiB), so multi-byte characters are
// cut at chunk boundaries.
function githubPushPayload() {
  const after = randomBytes(20).toString("hex");
  const commit = (i) =>
    `{"id":"${randomBytes(20).toString("hex")}", "message":"Fix café ☕ crème brûlée #${i} — 日本語 🚀",` +
    `  "author":{"name":"Zoë Ångström","email":"zoe@example.com"}}`;
  const commits = Array.from({ length: 900 }, (_, i) => commit(i)).join(",\r\n\t");
  return (
    `{"b": 1,  "a": "café ☕",\r\n\t"ref" :"refs/heads/main", "after":"${after}",` +
    ` "escaped":"caf\\u00e9", "dup": 1, "dup": 2, "n": 1.0, "big": 12345678901234567890,` +
    `\n  "commits": [${commits}]  }\n`
  );
}

function stripePayload(id) {
  return (
    `{\n  "id": "${id}",\n  "object": "event",\n  "api_version": "2024-06-20",\n` +
    `  "created": ${Math.floor(Date.now() / 1000)},\n  "data": {\n    "object": {\n` +
    `      "id": "pi_${randomBytes(12).toString("hex")}",  "object": "payment_intent",\n` +
    `      "amount": 2000, "currency": "eur",\n      "description": "Café ☕ — crème brûlée",\n` +
    `      "metadata": {"z": "last", "a": "first", "escaped": "\\u2615"}\n    }\n  },\n` +
    `  "livemode": false,\n  "pending_webhooks": 1,\n  "type": "payment_intent.succeeded"\n}`
  );
}

function standardPayload() {
  return (
    `{"type":"invoice.paid",   "timestamp":"${new Date().toISOString()}",\r\n` +
    `"data":{"customer":"Zoë ☕","amount":1.10,"lines":[ {"b":2,"a":1} ]}}`
  );
}

// Every byte value, a UTF-8 BOM, invalid UTF-8, CRLF and NUL, then random bytes; odd length,
// several chunks.
function binaryPayload() {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const nasty = Buffer.from([0xef, 0xbb, 0xbf, 0xc3, 0x28, 0xff, 0xfe, 0x0d, 0x0a, 0x00, 0x0a, 0x0d]);
  return Buffer.concat([nasty, all, randomBytes(300 * 1024 + 7)]);
}

// --- cases ----------------------------------------------------------------------------------

async function githubCase() {
  const body = githubPushPayload();
  const delivery = randomUUID();
  return {
    name: "github",
    path: "/github",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/json",
      "user-agent": "GitHub-Hookshot/hookrelay-test",
      "X-GitHub-Event": "push",
      "X-GitHub-Delivery": delivery,
      "X-GitHub-Hook-ID": "123456",
      "X-Hub-Signature-256": await githubSign(GITHUB_SECRET, body),
    },
    expect: (r) => r.event === "push" && r.delivery === delivery && r.after === JSON.parse(body).after,
  };
}

async function githubFormCase() {
  const after = randomBytes(20).toString("hex");
  const json =
    `{"zen": "Keep it logically awesome. café ☕",\r\n "after":"${after}",` +
    `  "hook_id": 1, "sum": "a+b=c & d%e"}`;
  // GitHub's form delivery: `payload=<urlencoded JSON>`, signed over the form body as sent.
  const body = new URLSearchParams({ payload: json }).toString();
  const delivery = randomUUID();
  return {
    name: "github-form",
    path: "/github-form",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      "user-agent": "GitHub-Hookshot/hookrelay-test",
      "X-GitHub-Event": "ping",
      "X-GitHub-Delivery": delivery,
      "X-Hub-Signature-256": await githubSign(GITHUB_SECRET, body),
    },
    expect: (r) => r.event === "ping" && r.delivery === delivery && r.after === after,
  };
}

function stripeCase() {
  const id = `evt_${randomBytes(12).toString("hex")}`;
  const body = stripePayload(id);
  const signature = stripe.webhooks.generateTestHeaderString({
    payload: body,
    secret: STRIPE_SECRET,
    timestamp: Math.floor(Date.now() / 1000),
  });
  return {
    name: "stripe",
    path: "/stripe",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/json; charset=utf-8",
      "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
      "Stripe-Signature": signature,
    },
    expect: (r) => r.id === id && r.type === "payment_intent.succeeded",
  };
}

function standardCase() {
  const body = standardPayload();
  const msgId = `msg_${randomBytes(12).toString("hex")}`;
  const now = new Date();
  return {
    name: "standard",
    path: "/standard",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/json",
      "webhook-id": msgId,
      "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      "webhook-signature": standard.sign(msgId, now, body),
    },
    expect: (r) => r.id === msgId && r.type === "invoice.paid",
  };
}

function binaryCase() {
  const body = binaryPayload();
  return {
    name: "binary",
    path: "/binary",
    // A query string rides along; the target must see it too.
    query: "?sig=a%2Fb&x=caf%C3%A9",
    body,
    headers: { "content-type": "application/octet-stream", "x-test-sha256": sha256(body) },
    expect: (r) => r.sha256 === sha256(body),
  };
}

// Negative control: signed over one body, a different body is sent. The target must refuse it
// through the relay, which proves the checks above can fail.
async function tamperedCase() {
  const original = `{"action": "opened",  "amount": 100, "who": "café ☕"}`;
  const tampered = original.replace("100", "900");
  return {
    name: "github-tampered",
    path: "/github",
    body: Buffer.from(tampered, "utf8"),
    headers: {
      "content-type": "application/json",
      "X-GitHub-Event": "issues",
      "X-GitHub-Delivery": randomUUID(),
      "X-Hub-Signature-256": await githubSign(GITHUB_SECRET, original),
    },
    expectStatus: 400,
  };
}

// Where the target's copy first differs from what was sent, for the failure line.
function describeDifference(sent, got) {
  if (!got) return "target received nothing";
  const { body } = got;
  if (body.equals(sent)) return "body arrived byte for byte";
  let i = 0;
  while (i < sent.length && i < body.length && sent[i] === body[i]) i++;
  const around = (b) => b.subarray(Math.max(0, i - 8), i + 8).toString("hex");
  return (
    `body differs: sent ${sent.length} bytes, target got ${body.length}; ` +
    `first difference at byte ${i} (sent …${around(sent)}…, got …${around(body)}…)`
  );
}

async function run(base, c) {
  const url = `${base}${c.path}${c.query ?? ""}`;
  const expectStatus = c.expectStatus ?? 200;
  received.delete(c.path);
  const res = await fetch(url, {
    method: "POST",
    headers: c.headers,
    body: c.body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  let reply;
  try {
    reply = JSON.parse(text);
  } catch {
    throw new Error(`status ${res.status}, body is not the target's JSON: ${text.slice(0, 300)}`);
  }
  const got = received.get(c.path);
  if (res.status !== expectStatus) {
    const why = reply.error ?? text;
    throw new Error(`status ${res.status} (want ${expectStatus}): ${why}; ${describeDifference(c.body, got)}`);
  }
  if (expectStatus !== 200) {
    if (reply.verified !== false) throw new Error(`target did not refuse: ${text}`);
    return `refused as it must be (${reply.error})`;
  }
  if (reply.verified !== true || !c.expect(reply)) throw new Error(`unexpected reply ${text}`);
  if (!got.body.equals(c.body)) throw new Error(describeDifference(c.body, got));
  if (c.query && got.query !== c.query) {
    throw new Error(`query arrived as ${JSON.stringify(got.query)}, sent ${JSON.stringify(c.query)}`);
  }
  for (const [name, value] of Object.entries(c.headers)) {
    const seen = got.headers[name.toLowerCase()];
    if (seen !== value) {
      throw new Error(`header ${name} arrived as ${JSON.stringify(seen)}, sent ${JSON.stringify(value)}`);
    }
  }
  return `verified (${c.body.length} bytes, sha256 ${reply.receivedSha256.slice(0, 12)}…)`;
}

function readLine() {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    rl.once("line", (line) => {
      resolve(line.trim());
      rl.close();
    });
    rl.once("close", () => reject(new Error("stdin closed before the relay URL arrived")));
  });
}

async function main() {
  await new Promise((resolve, reject) => {
    target.once("error", reject);
    target.listen(0, "127.0.0.1", resolve);
  });
  console.log(`TARGET_PORT=${target.address().port}`);

  const base = (await readLine()).replace(/\/+$/, "");
  if (!/^https?:\/\//.test(base)) throw new Error(`not a URL on stdin: ${JSON.stringify(base)}`);

  const cases = [
    await githubCase(),
    await githubFormCase(),
    stripeCase(),
    standardCase(),
    binaryCase(),
    await tamperedCase(),
  ];
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    try {
      console.log(`ok   ${c.name}: ${await run(base, c)}`);
      passed++;
    } catch (e) {
      // One line per case: library messages span several lines.
      console.log(`FAIL ${c.name}: ${String(e?.message ?? e).replace(/\s+/g, " ")}`);
      failed++;
    }
  }
  console.log(`senders: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

let code;
try {
  code = await main();
} catch (e) {
  console.error(`senders: ${e?.stack ?? e}`);
  code = 2;
}
clearTimeout(overall);
target.closeAllConnections();
target.close();
process.exit(code);
