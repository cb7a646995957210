// The AI SDK's streamText / generateText through @ai-sdk/openai-compatible (the gateway's OpenAI
// Chat Completions dialect) and @ai-sdk/anthropic (its Anthropic Messages dialect). The model id
// is a route name of tests/servers.py: the gateway resolves a route by the request's model.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { APICallError, generateText, NoOutputGeneratedError, streamText, tool } from 'ai';
import { z } from 'zod';

import {
  directAnthropic,
  directOpenAI,
  GATEWAY,
  nonce,
  parts,
  ROUTE_SYSTEM,
  simStats,
  upstreamDisconnect,
  upstreamRequest,
  upstreamRequests,
} from './support.mjs';

/** fetch, remembering each URL the provider called. */
function recordingFetch() {
  const urls = [];
  const wrapped = (input, init) => {
    urls.push(String(input instanceof Request ? input.url : input));
    return fetch(input, init);
  };
  return { urls, fetch: wrapped };
}

const DIALECTS = [
  {
    name: '@ai-sdk/openai-compatible',
    path: '/v1/chat/completions',
    provider: (fetch) =>
      createOpenAICompatible({
        name: 'tokenrelay',
        baseURL: `${GATEWAY}/v1`,
        apiKey: 'unused',
        includeUsage: true, // stream_options.include_usage: the usage chunk
        fetch,
      }),
    direct: directOpenAI,
    usage: (u) => [u.prompt_tokens, u.completion_tokens],
    thinkingRoute: 'oa', // upstream OpenAI: reasoning goes back as reasoning_content
    upstreamReasoning: (message) => message.reasoning_content,
  },
  {
    name: '@ai-sdk/anthropic',
    path: '/v1/messages', // the package appends /messages to its baseURL
    provider: (fetch) => createAnthropic({ baseURL: `${GATEWAY}/v1`, apiKey: 'unused', fetch }),
    direct: directAnthropic,
    usage: (u) => [u.input_tokens, u.output_tokens],
    thinkingRoute: 'an', // upstream Anthropic: the thinking block goes back with its signature
    upstreamReasoning: (message) => {
      const [thinking] = message.content.filter((block) => block.type === 'thinking');
      assert.match(thinking.signature, /^sim_sig_/);
      return thinking.thinking;
    },
  },
];

const PROVIDER_OF_ROUTE = { oa: 'openai', an: 'anthropic' };

for (const dialect of DIALECTS) {
  describe(dialect.name, () => {
    for (const route of ['oa', 'an']) {
      test(`streamText on route ${route}: many deltas; text, usage, finish of a direct read`, async () => {
        const { urls, fetch } = recordingFetch();
        const prompt = `Tell me about streaming ${nonce()}`;
        const result = streamText({ model: dialect.provider(fetch)(route), prompt, maxOutputTokens: 200 });
        const seen = await parts(result.fullStream);
        const deltas = seen.filter((p) => p.type === 'text-delta').map((p) => p.text);
        const direct = await dialect.direct(route, prompt, { max_tokens: 200 });

        assert.ok(deltas.length >= 10, `expected many text deltas, got ${deltas.length}`);
        assert.ok(direct.text.length > 20);
        assert.equal(deltas.join(''), direct.text);
        assert.equal(await result.text, direct.text);
        assert.equal(await result.finishReason, 'stop');
        const usage = await result.usage;
        assert.deepEqual([usage.inputTokens, usage.outputTokens], dialect.usage(direct.usage));
        assert.equal(usage.outputTokens, 20); // the simulator's default answer length
        assert.deepEqual(
          seen.filter((p) => p.type === 'error'),
          [],
        );

        const { headers } = await result.response;
        assert.match(headers['content-type'], /^text\/event-stream/);
        assert.equal(headers['x-tokenrelay-route'], route);
        assert.equal(headers['x-tokenrelay-provider'], PROVIDER_OF_ROUTE[route]);
        assert.match(headers['x-request-id'], /^[0-9a-f]{16,}$/);
        assert.deepEqual(urls, [`${GATEWAY}${dialect.path}`]);
      });
    }

    test('generateText (not streamed) returns the same answer as a direct read', async () => {
      const prompt = `Explain backpressure ${nonce()}`;
      const result = await generateText({ model: dialect.provider()('oa'), prompt, maxOutputTokens: 200 });
      const direct = await dialect.direct('oa', prompt, { max_tokens: 200 });
      assert.equal(result.text, direct.text);
      assert.equal(result.finishReason, 'stop');
      assert.deepEqual([result.usage.inputTokens, result.usage.outputTokens], dialect.usage(direct.usage));
    });

    test('system prompt, maxOutputTokens and temperature reach the upstream', async () => {
      const word = nonce();
      const system = `Answer in French. ${word}`;
      const result = streamText({
        model: dialect.provider()('open'), // the route that accepts a client system prompt
        system,
        prompt: `Hi ${word}`,
        maxOutputTokens: 4,
        temperature: 0.25,
      });
      const text = await result.text;
      assert.equal(text.split(' ').length, 4);
      assert.equal(await result.finishReason, 'length');
      assert.equal((await result.usage).outputTokens, 4);

      const upstream = await upstreamRequest(word); // route open targets Anthropic
      assert.equal(upstream.path, '/v1/messages');
      assert.equal(upstream.body.max_tokens, 4);
      assert.equal(upstream.body.temperature, 0.25);
      const sent =
        typeof upstream.body.system === 'string'
          ? upstream.body.system
          : upstream.body.system.map((block) => block.text).join('\n');
      assert.ok(sent.includes(system), `upstream system prompt ${JSON.stringify(sent)}`);
      assert.deepEqual(
        upstream.body.messages.map((m) => m.role),
        ['user'],
      );
    });

    test('a 429 before the stream is an APICallError with the status and the gateway message', async () => {
      const { fetch } = recordingFetch();
      const errors = [];
      const result = streamText({
        model: dialect.provider(fetch)('limited'),
        prompt: `Hi ${nonce()}`,
        maxOutputTokens: 50,
        maxRetries: 0,
        onError: ({ error }) => errors.push(error),
      });
      const seen = await parts(result.fullStream);
      assert.deepEqual(
        seen.map((p) => p.type),
        ['start', 'error'],
      );
      const { error } = seen[1];
      assert.ok(APICallError.isInstance(error), `${error?.name}: ${error?.message}`);
      assert.equal(error.statusCode, 429);
      assert.match(error.message, /^simulated rate limit/);
      assert.equal(error.isRetryable, true);
      assert.equal(error.responseHeaders['retry-after'], '1');
      assert.equal(error.url, `${GATEWAY}${dialect.path}`);
      assert.deepEqual(errors, [error]);
      await assert.rejects(result.text, (e) => NoOutputGeneratedError.isInstance(e));
    });

    test('an unknown route is a 404 APICallError naming the routes', async () => {
      const result = streamText({
        model: dialect.provider()('no-such-route'),
        prompt: 'Hi',
        maxOutputTokens: 50,
        maxRetries: 0,
        onError: () => {},
      });
      const [, failure] = await parts(result.fullStream);
      assert.equal(failure.type, 'error');
      assert.ok(APICallError.isInstance(failure.error));
      assert.equal(failure.error.statusCode, 404);
      assert.equal(failure.error.isRetryable, false);
      assert.match(failure.error.message, /'no-such-route' is neither a route nor a model/);
      assert.match(failure.error.message, /routes: .*\bflaky\b/);
    });

    test('an error mid-stream is an error part after the first deltas, finish reason error', async () => {
      const errors = [];
      const prompt = `Hi ${nonce()}`;
      const result = streamText({
        model: dialect.provider()('midfail'),
        prompt,
        maxOutputTokens: 50,
        onError: ({ error }) => errors.push(error),
      });
      const seen = await parts(result.fullStream);
      const types = seen.map((p) => p.type);
      const deltas = seen.filter((p) => p.type === 'text-delta').map((p) => p.text);
      assert.equal(deltas.length, 3); // the simulator fails after 3 tokens (fault_after)
      const failures = seen.filter((p) => p.type === 'error');
      assert.equal(failures.length, 1);
      assert.ok(types.indexOf('error') > types.lastIndexOf('text-delta'));
      assert.match(failures[0].error.message, /simulated overload after 3 tokens/);
      assert.deepEqual(errors, [failures[0].error]);
      assert.equal(await result.finishReason, 'error');
      const direct = await dialect.direct('oa', prompt, { max_tokens: 3 });
      assert.equal(deltas.join(''), direct.text.replace(/\.$/, ''));
    });

    test('aborting with an AbortSignal ends the stream and the gateway leaves the upstream', async () => {
      const before = (await simStats()).disconnects.length;
      const controller = new AbortController();
      const started = performance.now();
      const result = streamText({
        model: dialect.provider()('slow'), // 500 tokens, 20 ms apart: 10 s if not stopped
        prompt: `Count ${nonce()}`,
        maxOutputTokens: 1000,
        abortSignal: controller.signal,
      });
      const seen = [];
      for await (const part of result.fullStream) {
        seen.push(part);
        if (seen.filter((p) => p.type === 'text-delta').length === 3) controller.abort();
      }
      const elapsed = performance.now() - started;
      assert.equal(seen.at(-1).type, 'abort');
      assert.equal(seen.filter((p) => p.type === 'text-delta').length, 3);
      assert.ok(elapsed < 3000, `the stream went on for ${elapsed} ms after the abort`);
      const gone = await upstreamDisconnect(before, '/v1/messages', 500);
      assert.ok(gone.tokens_sent >= 3 && gone.tokens_sent < 100, JSON.stringify(gone));
    });

    test('route flaky fails over transparently: one answer, the attempts in a header', async () => {
      const prompt = `Hi ${nonce()}`;
      const result = streamText({ model: dialect.provider()('flaky'), prompt, maxOutputTokens: 200 });
      const seen = await parts(result.fullStream);
      assert.deepEqual(
        seen.filter((p) => p.type === 'error'),
        [],
      );
      const direct = await dialect.direct('oa', prompt, { max_tokens: 200 }); // the same model
      assert.equal(await result.text, direct.text);
      assert.equal(await result.finishReason, 'stop');
      const { headers } = await result.response;
      assert.equal(headers['x-tokenrelay-provider'], 'openai');
      const attempts = headers['x-tokenrelay-attempts'].split(', ');
      assert.ok(attempts.length >= 2, headers['x-tokenrelay-attempts']);
      assert.match(attempts[0], /^anthropic\/claude-sonnet-5-5;outcome=overloaded;ms=\d+$/);
      assert.match(attempts.at(-1), /^openai\/gpt-5\.5;outcome=ok;ms=\d+$/);
    });

    test('thinking streams as reasoning parts, and a second turn carries it back upstream', async () => {
      const word = nonce();
      const model = dialect.provider()(dialect.thinkingRoute);
      const headers = { 'x-sim-thinking-tokens': '4', 'x-sim-tokens': '3' }; // forwarded upstream
      const first = streamText({ model, prompt: `Think ${word}`, maxOutputTokens: 100, headers });
      const seen = await parts(first.fullStream);
      const types = seen.map((p) => p.type).filter((t) => t.startsWith('reasoning') || t.startsWith('text'));
      assert.equal(types.indexOf('reasoning-start'), 0);
      assert.ok(types.lastIndexOf('reasoning-end') < types.indexOf('text-start'), types.join(' '));
      const reasoning = await first.reasoningText;
      assert.equal(reasoning.split(' ').length, 4);
      assert.equal((await first.text).split(' ').length, 3);
      assert.equal((await first.usage).outputTokenDetails.reasoningTokens, 4);

      const second = streamText({
        model,
        messages: [
          { role: 'user', content: `Think ${word}` },
          ...(await first.response).messages,
          { role: 'user', content: 'And then?' },
        ],
        maxOutputTokens: 100,
        headers,
      });
      assert.equal((await second.text).split(' ').length, 3);
      const [, again] = await upstreamRequests(word);
      const answer = again.body.messages.find((m) => m.role === 'assistant');
      assert.deepEqual(dialect.upstreamReasoning(answer), reasoning);
    });

    test('a tool call streams back as a tool-call part with parsed input', async () => {
      const word = nonce();
      const result = streamText({
        model: dialect.provider()('oa'),
        prompt: `Look it up ${word}`,
        maxOutputTokens: 200,
        tools: {
          lookup: tool({
            description: 'Search the knowledge base',
            inputSchema: z.object({ query: z.string() }),
          }),
        },
        headers: { 'x-sim-tool': 'auto' }, // forwarded: the simulator calls the first tool
      });
      const seen = await parts(result.fullStream);
      const calls = seen.filter((p) => p.type === 'tool-call');
      assert.equal(calls.length, 1, JSON.stringify(seen.map((p) => p.type)));
      assert.equal(calls[0].toolName, 'lookup');
      assert.equal(typeof calls[0].input.query, 'string');
      assert.ok(calls[0].input.query.length > 0);
      assert.equal(await result.finishReason, 'tool-calls');
      const upstream = await upstreamRequest(word);
      const tools = upstream.body.tools.map((t) => t.function?.name ?? t.name);
      assert.deepEqual(tools, ['lookup']);
    });
  });
}

test('route default: its own system prompt goes upstream, a client one is refused readably', async () => {
  const anthropic = createAnthropic({ baseURL: `${GATEWAY}/v1`, apiKey: 'unused' });
  const word = nonce();
  const ok = streamText({ model: anthropic('default'), prompt: `Hi ${word}`, maxOutputTokens: 50 });
  assert.ok((await ok.text).length > 0);
  const upstream = await upstreamRequest(word);
  assert.ok(JSON.stringify(upstream.body.system).includes(ROUTE_SYSTEM));

  const refused = streamText({
    model: anthropic('default'),
    system: 'Be brief.',
    prompt: 'Hi',
    maxOutputTokens: 50,
    maxRetries: 0,
    onError: () => {},
  });
  const failure = (await parts(refused.fullStream)).find((p) => p.type === 'error');
  assert.equal(failure.error.statusCode, 400);
  assert.match(failure.error.message, /route 'default' has its own system prompt/);
});
