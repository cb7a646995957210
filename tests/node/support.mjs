// What the test files share: where the gateway and the simulator are, direct (non-SDK) reads of
// the gateway to compare the SDK's results with, and the simulator's /stats.
//
// The gateway is the one tests/test_node_sdk.py starts with the test routes of tests/servers.py
// (gateway_environ); TOKENRELAY_URL and TOKENRELAY_SIM_URL point at it and at its simulator, and
// TOKENRELAY_KEY and TOKENRELAY_OTHER_KEY are two of its API keys (stored responses need one).

import { randomUUID } from 'node:crypto';

// The SDK logs a warning when a model id (here a route name) is unknown to it: not our concern.
globalThis.AI_SDK_LOG_WARNINGS = false;

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through tests/test_node_sdk.py, or see README.md`);
  }
  return value.replace(/\/+$/, '');
}

export const GATEWAY = required('TOKENRELAY_URL');
export const SIMULATOR = required('TOKENRELAY_SIM_URL');
export const KEY = required('TOKENRELAY_KEY');
export const OTHER_KEY = required('TOKENRELAY_OTHER_KEY');

/** The system prompt of the test routes that have one (tests/servers.py ROUTE_SYSTEM). */
export const ROUTE_SYSTEM = 'You are the support assistant of Acme.';

/** A word no other request of the run contains, to find this request in the simulator's log. */
export function nonce() {
  return `n${randomUUID().replaceAll('-', '').slice(0, 16)}`;
}

async function json(response) {
  const text = await response.text();
  if (!response.ok) throw new Error(`${response.status} ${response.url}: ${text}`);
  return JSON.parse(text);
}

/** The answer the gateway gives without any SDK: POST /v1/chat/completions, not streamed. */
export async function directOpenAI(route, prompt, fields = {}) {
  const response = await fetch(`${GATEWAY}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: route, messages: [{ role: 'user', content: prompt }], ...fields }),
  });
  const body = await json(response);
  return { text: body.choices[0].message.content, usage: body.usage, headers: response.headers };
}

/** The answer the gateway gives without any SDK: POST /v1/messages, not streamed. */
export async function directAnthropic(route, prompt, fields = {}) {
  const response = await fetch(`${GATEWAY}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({
      model: route,
      max_tokens: 1024,
      messages: [{ role: 'user', content: prompt }],
      ...fields,
    }),
  });
  const body = await json(response);
  const text = body.content.filter((block) => block.type === 'text').map((block) => block.text);
  return { text: text.join(''), usage: body.usage, headers: response.headers };
}

/** The simulator's GET /stats: requests, completed, tokens_sent, last_requests, disconnects. */
export async function simStats() {
  return json(await fetch(`${SIMULATOR}/stats`));
}

/** The requests the simulator received whose body mentions `word` (see nonce()), oldest first. */
export async function upstreamRequests(word) {
  const stats = await simStats();
  return stats.last_requests.filter((item) => JSON.stringify(item.body).includes(word));
}

/** The one request the simulator received whose body mentions `word`. */
export async function upstreamRequest(word) {
  const found = await upstreamRequests(word);
  if (found.length !== 1) {
    throw new Error(`expected one upstream request mentioning ${word}, found ${found.length}`);
  }
  return found[0];
}

/** Poll `probe` until it returns something truthy, or fail after `withinMs`. */
export async function eventually(probe, { withinMs = 5000, what = 'condition' } = {}) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Wait until the simulator has seen a client leave `path` after `before` disconnects were
 * recorded, before its stream was complete; return that disconnect.
 */
export async function upstreamDisconnect(before, path, tokens) {
  return eventually(
    async () => {
      const { disconnects } = await simStats();
      return disconnects.slice(before).find((d) => d.path === path && d.tokens_sent < tokens);
    },
    { what: `a client disconnect on ${path} in the simulator's /stats` },
  );
}

/** Every part of an AI SDK fullStream, in order. */
export async function parts(stream) {
  const seen = [];
  for await (const part of stream) seen.push(part);
  return seen;
}

/**
 * fetch for an SDK's tool loop, remembering each URL and JSON body it sent: its first request asks
 * the simulator (through the gateway, which forwards x-sim-* headers) to call the request's first
 * tool; the later ones, which carry the tool's result, get a plain answer, so the loop ends.
 */
export function toolLoopFetch() {
  const sent = [];
  const wrapped = (input, init = {}) => {
    const url = String(input instanceof Request ? input.url : input);
    sent.push({ url, body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined });
    const headers = new Headers(init.headers);
    if (sent.length === 1) headers.set('x-sim-tool', 'auto');
    return fetch(input, { ...init, headers });
  };
  return { sent, fetch: wrapped };
}
