// Typed webhooks from real senders, for e2e/tests/event_types.rs: GitHub deliveries made from
// octokit's example payloads (@octokit/webhooks-examples) and signed with
// @octokit/webhooks-methods, and Stripe events signed with the stripe library. The caller
// routes them through the relay to targets of its own and checks which target got which,
// byte for byte.
//
// Protocol with the caller:
//   1. prints `READY` once the libraries are loaded;
//   2. reads lines from stdin, each `<webhook base URL> <case>[,<case>...]`, and sends those
//      cases in order to the URL (plus the case's path), one at a time;
//   3. per case prints `SENT <case> <status> <sha256 of the body> <the answer's body>`, and
//      `DONE` after the line's last case;
//   4. exits when stdin closes.
// A case name is `github-<event>[-<n>]` (octokit's n-th example of that event, default 0, and
// its X-GitHub-Event), or `stripe-<event type>`.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

import { sign as githubSign } from "@octokit/webhooks-methods";
import Stripe from "stripe";

const REQUEST_TIMEOUT_MS = 10_000;

const require = createRequire(import.meta.url);
const examples = require("@octokit/webhooks-examples");

const GITHUB_SECRET = randomBytes(20).toString("hex");
const STRIPE_SECRET = `whsec_${randomBytes(24).toString("hex")}`;
const stripe = new Stripe("sk_test_hookrelay_offline");

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

async function githubCase(event, n) {
  const found = examples.find((e) => e.name === event);
  if (!found || !found.examples[n]) throw new Error(`octokit has no example ${n} of ${event}`);
  // As GitHub sends it: the example as JSON, signed over exactly these bytes.
  const body = JSON.stringify(found.examples[n], null, 2);
  return {
    path: "/github?x=1",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/json",
      "user-agent": "GitHub-Hookshot/hookrelay-test",
      "X-GitHub-Event": event,
      "X-GitHub-Delivery": randomUUID(),
      "X-Hub-Signature-256": await githubSign(GITHUB_SECRET, body),
    },
  };
}

function stripeCase(type) {
  const body =
    `{\n  "id": "evt_${randomBytes(12).toString("hex")}",\n  "object": "event",\n` +
    `  "api_version": "2024-06-20",\n  "created": ${Math.floor(Date.now() / 1000)},\n` +
    `  "data": {\n    "object": {"id": "pi_${randomBytes(12).toString("hex")}", ` +
    `"object": "payment_intent", "amount": 2000, "currency": "eur", "description": "Café ☕"}\n  },\n` +
    `  "livemode": false,\n  "pending_webhooks": 1,\n  "type": "${type}"\n}`;
  const signature = stripe.webhooks.generateTestHeaderString({ payload: body, secret: STRIPE_SECRET });
  // Proves the header is one the official verifier accepts for these bytes.
  stripe.webhooks.constructEvent(body, signature, STRIPE_SECRET);
  return {
    path: "/stripe",
    body: Buffer.from(body, "utf8"),
    headers: {
      "content-type": "application/json; charset=utf-8",
      "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
      "Stripe-Signature": signature,
    },
  };
}

async function build(name) {
  let match = /^github-([a-z_]+?)(?:-(\d+))?$/.exec(name);
  if (match) return githubCase(match[1], Number(match[2] ?? 0));
  match = /^stripe-([a-z_.]+)$/.exec(name);
  if (match) return stripeCase(match[1]);
  throw new Error(`unknown case ${name}`);
}

async function send(base, name) {
  const c = await build(name);
  const answer = await fetch(base + c.path, {
    method: "POST",
    headers: c.headers,
    body: c.body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = (await answer.text()).replace(/\s+/g, " ");
  console.log(`SENT ${name} ${answer.status} ${sha256(c.body)} ${text}`);
}

console.log("READY");
for await (const line of createInterface({ input: process.stdin })) {
  const [base, cases] = line.trim().split(" ");
  if (!base) continue;
  for (const name of (cases ?? "").split(",").filter(Boolean)) {
    try {
      await send(base, name);
    } catch (e) {
      console.log(`SENT ${name} 0 - ${String(e?.message ?? e).replace(/\s+/g, " ")}`);
    }
  }
  console.log("DONE");
}
