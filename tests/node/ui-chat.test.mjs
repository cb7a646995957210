// POST /api/chat, the AI SDK's UI message stream, read by the SDK's own client side: the
// DefaultChatTransport that useChat uses, readUIMessageStream, and the Chat class of
// @ai-sdk/react (an AbstractChat: the state machine behind useChat, without React rendering).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import { Chat } from '@ai-sdk/react';
import { APICallError, DefaultChatTransport, readUIMessageStream } from 'ai';

import {
  directOpenAI,
  eventually,
  GATEWAY,
  nonce,
  simStats,
  upstreamDisconnect,
  upstreamRequest,
  upstreamRequests,
} from './support.mjs';

const API = `${GATEWAY}/api/chat`;

function userMessage(text, extraParts = []) {
  return { id: randomUUID(), role: 'user', parts: [...extraParts, { type: 'text', text }] };
}

/** fetch, remembering each request body and response. */
function recordingFetch() {
  const calls = [];
  const wrapped = async (input, init) => {
    const response = await fetch(input, init);
    calls.push({ url: String(input), body: init?.body ? JSON.parse(init.body) : undefined, response });
    return response;
  };
  return { calls, fetch: wrapped };
}

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

/** The text of a UIMessage's text parts. */
function textOf(message) {
  return message.parts
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');
}

function send(transport, messages, body) {
  return transport.sendMessages({
    chatId: randomUUID(),
    messages,
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal: undefined,
    body,
  });
}

/** A Chat (the class behind useChat) over the default transport, pointed at the gateway. */
function chat(body) {
  return new Chat({ transport: new DefaultChatTransport({ api: API, body }) });
}

const assistant = (c) => c.messages.filter((m) => m.role === 'assistant').at(-1);

describe('DefaultChatTransport and readUIMessageStream', () => {
  test('the UI message stream: chunks in order, text deltas, the metadata on finish', async () => {
    const { calls, fetch } = recordingFetch();
    const transport = new DefaultChatTransport({ api: API, fetch });
    const prompt = `Tell me about streaming ${nonce()}`;
    const stream = await send(transport, [userMessage(prompt)], { route: 'oa' });
    const [forChunks, forMessages] = stream.tee();
    const [chunks, snapshots] = await Promise.all([
      readAll(forChunks),
      readAll(readUIMessageStream({ stream: forMessages })),
    ]);
    const direct = await directOpenAI('oa', prompt);

    const types = chunks.map((c) => c.type);
    const deltas = chunks.filter((c) => c.type === 'text-delta');
    assert.deepEqual(
      types.filter((t) => t !== 'text-delta'),
      ['start', 'start-step', 'text-start', 'text-end', 'finish-step', 'finish'],
    );
    assert.equal(deltas.length, 20);
    assert.ok(types.indexOf('text-start') < types.indexOf('text-delta'));
    assert.ok(types.lastIndexOf('text-delta') < types.indexOf('text-end'));
    assert.equal(deltas.map((c) => c.delta).join(''), direct.text);

    const { response, body } = calls[0];
    assert.equal(calls.length, 1);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    assert.equal(response.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
    assert.equal(response.headers.get('x-tokenrelay-provider'), 'openai');
    assert.equal(response.headers.get('x-tokenrelay-model'), 'gpt-5.5');
    assert.match(response.headers.get('x-tokenrelay-attempts'), /^openai\/gpt-5\.5;outcome=ok;ms=\d+$/);
    // what the transport sent: its own fields plus the body option (messageId undefined: dropped)
    assert.deepEqual(Object.keys(body).sort(), ['id', 'messages', 'route', 'trigger']);
    assert.equal(body.trigger, 'submit-message');

    const finish = chunks.at(-1);
    assert.equal(finish.finishReason, 'stop');
    const meta = finish.messageMetadata;
    assert.equal(meta.requestId, response.headers.get('x-request-id'));
    assert.equal(meta.route, 'oa');
    assert.equal(meta.provider, 'openai');
    assert.equal(meta.model, 'gpt-5.5');
    assert.equal(meta.failover, false);
    assert.equal(meta.attempts.length, 1);
    assert.equal(meta.attempts[0].outcome, 'ok');
    assert.equal(typeof meta.ttftMs, 'number');
    assert.equal(meta.usage.inputTokens, direct.usage.prompt_tokens);
    assert.equal(meta.usage.outputTokens, direct.usage.completion_tokens);
    assert.match(meta.costUsd, /^\d+\.\d+$/);
    assert.ok(Number(meta.costUsd) > 0);

    // readUIMessageStream: the assistant message, growing, then whole
    assert.ok(snapshots.length > 10, `only ${snapshots.length} message snapshots`);
    const message = snapshots.at(-1);
    assert.equal(message.role, 'assistant');
    assert.equal(message.id, chunks[0].messageId);
    assert.equal(textOf(message), direct.text);
    assert.deepEqual(message.metadata, meta);
    const lengths = snapshots.map((m) => textOf(m).length);
    assert.ok(lengths.every((n, i) => i === 0 || n >= lengths[i - 1]));
  });

  test('GET /api/chat/{id}/stream is 204: reconnectToStream finds nothing to resume', async () => {
    const transport = new DefaultChatTransport({ api: API });
    assert.equal(await transport.reconnectToStream({ chatId: randomUUID() }), null);
  });

  test('history: step-start, reasoning, source, data parts accepted; only text goes upstream', async () => {
    const word = nonce();
    const history = [
      userMessage(`What is SSE? ${word}`),
      {
        id: randomUUID(),
        role: 'assistant',
        metadata: { provider: 'openai', usage: { inputTokens: 3, outputTokens: 4 } },
        parts: [
          { type: 'step-start' },
          { type: 'reasoning', text: 'The user asks about SSE.', state: 'done' },
          { type: 'source-url', sourceId: 's1', url: 'https://example.org/sse', title: 'SSE' },
          { type: 'data-weather', id: 'd1', data: { celsius: 21 } },
          { type: 'text', text: 'Server-sent events.', state: 'done' },
        ],
      },
      userMessage('And WebSockets?'),
    ];
    const chunks = await readAll(
      await send(new DefaultChatTransport({ api: API }), history, { route: 'an' }),
    );
    assert.equal(chunks.at(-1).type, 'finish');
    const upstream = await upstreamRequest(word);
    assert.equal(upstream.path, '/v1/messages');
    const flat = upstream.body.messages.map((m) => [
      m.role,
      typeof m.content === 'string' ? m.content : m.content.map((b) => b.text).join(''),
    ]);
    assert.deepEqual(flat, [
      ['user', `What is SSE? ${word}`],
      ['assistant', 'Server-sent events.'],
      ['user', 'And WebSockets?'],
    ]);
    assert.ok(!JSON.stringify(upstream.body).includes('The user asks about SSE.'));
  });

  test('a file part (image data: URL) reaches the upstream as an image', async () => {
    // a 1x1 PNG
    const png =
      'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
    const word = nonce();
    const file = {
      type: 'file',
      mediaType: 'image/png',
      filename: 'dot.png',
      url: `data:image/png;base64,${png}`,
    };
    const chunks = await readAll(
      await send(new DefaultChatTransport({ api: API }), [userMessage(`Describe ${word}`, [file])], {
        route: 'an',
      }),
    );
    assert.equal(chunks.at(-1).type, 'finish');
    const upstream = await upstreamRequest(word);
    const blocks = upstream.body.messages[0].content;
    const image = blocks.find((b) => b.type === 'image');
    assert.ok(image, JSON.stringify(blocks));
    assert.deepEqual(image.source, { type: 'base64', media_type: 'image/png', data: png });
  });

  test('a tool part in the history is a 400 that says why', async () => {
    const history = [
      userMessage('Weather?'),
      {
        id: randomUUID(),
        role: 'assistant',
        parts: [
          {
            type: 'tool-weather',
            toolCallId: 'call_1',
            state: 'output-available',
            input: { city: 'Paris' },
            output: { celsius: 21 },
          },
        ],
      },
      userMessage('Thanks'),
    ];
    const failure = await send(new DefaultChatTransport({ api: API }), history, { route: 'oa' }).catch(
      (e) => e,
    );
    assert.ok(APICallError.isInstance(failure), String(failure));
    assert.equal(failure.statusCode, 400);
    assert.match(failure.message, /tool/i);
    assert.match(failure.message, /messages\[1\]/);
  });

  test('an unknown body field is a 422 naming it', async () => {
    const failure = await send(new DefaultChatTransport({ api: API }), [userMessage('Hi')], {
      route: 'oa',
      colour: 'blue',
    }).catch((e) => e);
    assert.ok(APICallError.isInstance(failure), String(failure));
    assert.equal(failure.statusCode, 422);
    assert.match(failure.message, /colour/);
  });
});

describe('Chat (@ai-sdk/react), the state behind useChat', () => {
  test('two turns: the assistant message with its metadata, the history sent back', async () => {
    const word = nonce();
    const c = chat({ route: 'an' });
    await c.sendMessage({ text: `What is SSE? ${word}` });
    assert.equal(c.status, 'ready');
    assert.equal(c.error, undefined);
    assert.deepEqual(
      c.messages.map((m) => m.role),
      ['user', 'assistant'],
    );
    const first = assistant(c);
    assert.equal(first.metadata.provider, 'anthropic');
    assert.equal(first.metadata.model, 'claude-sonnet-5-5');
    assert.equal(first.metadata.route, 'an');
    assert.equal(first.metadata.usage.outputTokens, 20);
    assert.ok(textOf(first).length > 20);

    await c.sendMessage({ text: 'Say more' });
    assert.equal(c.status, 'ready');
    assert.deepEqual(
      c.messages.map((m) => m.role),
      ['user', 'assistant', 'user', 'assistant'],
    );
    assert.notEqual(assistant(c).metadata.requestId, first.metadata.requestId);
    const turns = await upstreamRequests(word);
    assert.equal(turns.length, 2);
    const second = turns[1].body.messages;
    assert.deepEqual(
      second.map((m) => m.role),
      ['user', 'assistant', 'user'],
    );
    assert.equal(JSON.stringify(second[1].content).includes(textOf(first).slice(0, 30)), true);
  });

  test('regenerate(): the last answer replaced, the history sent without it', async () => {
    const word = nonce();
    const c = chat({ route: 'oa' });
    await c.sendMessage({ text: `What is SSE? ${word}` });
    const first = assistant(c);
    await c.regenerate();
    assert.equal(c.status, 'ready', String(c.error));
    assert.deepEqual(
      c.messages.map((m) => m.role),
      ['user', 'assistant'],
    );
    assert.notEqual(assistant(c).id, first.id);
    assert.notEqual(assistant(c).metadata.requestId, first.metadata.requestId);
    const turns = await upstreamRequests(word);
    assert.equal(turns.length, 2);
    assert.deepEqual(turns[1].body.messages, turns[0].body.messages); // the same question again
  });

  test('thinking arrives as a reasoning part before the text', async () => {
    const c = new Chat({
      transport: new DefaultChatTransport({
        api: API,
        body: { route: 'an' },
        headers: { 'x-sim-thinking-tokens': '4', 'x-sim-tokens': '3' }, // forwarded upstream
      }),
    });
    await c.sendMessage({ text: `Think ${nonce()}` });
    assert.equal(c.status, 'ready', String(c.error));
    const answer = assistant(c);
    const kinds = answer.parts.map((p) => p.type).filter((t) => t !== 'step-start');
    assert.deepEqual(kinds, ['reasoning', 'text']);
    assert.equal(answer.parts.find((p) => p.type === 'reasoning').text.split(' ').length, 4);
    assert.equal(textOf(answer).split(' ').length, 3);
    assert.equal(answer.metadata.usage.reasoningTokens, 4);
  });

  test('per-call body: route, system, maxTokens and temperature reach the upstream', async () => {
    const word = nonce();
    const c = chat({ route: 'oa' });
    await c.sendMessage(
      { text: `Hi ${word}` },
      {
        body: {
          route: 'open',
          system: `Answer in French. ${word}`,
          maxTokens: 4,
          temperature: 0.25,
          metadata: { user: 'u-1' },
        },
      },
    );
    assert.equal(c.status, 'ready', String(c.error));
    const message = assistant(c);
    assert.equal(message.metadata.route, 'open');
    assert.equal(message.metadata.usage.outputTokens, 4);
    assert.equal(textOf(message).split(' ').length, 4);
    const upstream = await upstreamRequest(word);
    assert.equal(upstream.body.max_tokens, 4);
    assert.equal(upstream.body.temperature, 0.25);
    assert.ok(JSON.stringify(upstream.body.system).includes(`Answer in French. ${word}`));
  });

  test("body 'model' is an alias of 'route'", async () => {
    const c = chat({ model: 'an' });
    await c.sendMessage({ text: `Hi ${nonce()}` });
    assert.equal(c.status, 'ready', String(c.error));
    assert.equal(assistant(c).metadata.route, 'an');
    assert.equal(assistant(c).metadata.provider, 'anthropic');
  });

  test('a 429 before the stream: status error, error.message is the gateway message', async () => {
    const errors = [];
    const c = new Chat({
      transport: new DefaultChatTransport({ api: API, body: { route: 'limited' } }),
      onError: (error) => errors.push(error),
    });
    await c.sendMessage({ text: 'Hi' });
    assert.equal(c.status, 'error');
    assert.equal(c.error.message, 'simulated rate limit (2 attempts)');
    assert.equal(c.error.statusCode, 429);
    assert.deepEqual(errors, [c.error]);
    assert.deepEqual(
      c.messages.map((m) => m.role),
      ['user'],
    );
  });

  test('an error mid-stream: status error with its text, the partial answer kept', async () => {
    const prompt = `Hi ${nonce()}`;
    const c = chat({ route: 'midfail' });
    await c.sendMessage({ text: prompt });
    assert.equal(c.status, 'error');
    assert.match(c.error.message, /simulated overload after 3 tokens/);
    const partial = textOf(assistant(c));
    const direct = await directOpenAI('oa', prompt, { max_tokens: 3 });
    assert.equal(partial, direct.text.replace(/\.$/, ''));
    // The metadata chunk comes before the error, so the failed message still says what it cost.
    const meta = assistant(c).metadata;
    assert.equal(meta.route, 'midfail');
    assert.equal(meta.usageEstimated, true);
    assert.ok(meta.usage.outputTokens >= 3, JSON.stringify(meta.usage));
    assert.ok(meta.costUsd === null || Number(meta.costUsd) > 0, String(meta.costUsd));
  });

  test('stop() mid-stream: status ready, partial text kept, the upstream left', async () => {
    const before = (await simStats()).disconnects.length;
    const c = chat({ route: 'slow' }); // 500 tokens 20 ms apart
    const started = performance.now();
    const sending = c.sendMessage({ text: `Count ${nonce()}` });
    await eventually(
      () => c.status === 'streaming' && textOf(assistant(c) ?? { parts: [] }).split(' ').length >= 5,
      {
        what: 'five streamed words',
      },
    );
    await c.stop();
    await sending;
    const elapsed = performance.now() - started;
    assert.equal(c.status, 'ready');
    assert.equal(c.error, undefined);
    const words = textOf(assistant(c)).split(' ').length;
    assert.ok(words >= 5 && words < 100, `${words} words kept`);
    assert.ok(elapsed < 5000, `${elapsed} ms`);
    const gone = await upstreamDisconnect(before, '/v1/messages', 500);
    assert.ok(gone.tokens_sent < 100, JSON.stringify(gone));
  });

  test('resumeStream() with nothing to resume leaves the chat as it was', async () => {
    const c = chat({ route: 'oa' });
    await c.sendMessage({ text: 'Hi' });
    const before = JSON.stringify(c.messages);
    await c.resumeStream();
    assert.equal(c.status, 'ready');
    assert.equal(c.error, undefined);
    assert.equal(JSON.stringify(c.messages), before);
  });
});
