// The AI SDK's default OpenAI provider, @ai-sdk/openai's createOpenAI({ baseURL }): the model
// `openai(id)` calls POST /v1/responses, `openai.chat(id)` POST /v1/chat/completions. streamText
// and generateText give the answer a direct read of the gateway gives, and a tool loop
// (tools with execute, stopWhen: stepCountIs(3)) runs to its final text.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

import { directOpenAI, GATEWAY, KEY, nonce, parts, toolLoopFetch, upstreamRequest } from './support.mjs';

/** fetch, remembering each URL the provider called. */
function recordingFetch() {
  const urls = [];
  const wrapped = (input, init) => {
    urls.push(String(input instanceof Request ? input.url : input));
    return fetch(input, init);
  };
  return { urls, fetch: wrapped };
}

function provider(fetch) {
  return createOpenAI({ baseURL: `${GATEWAY}/v1`, apiKey: KEY, fetch });
}

const MODELS = [
  {
    name: "openai('oa') (the Responses API)",
    model: (openai) => openai('oa'),
    path: '/v1/responses',
    // With the provider's default, store: true, a later step refers to the earlier step's
    // message by id ({type: 'item_reference', id: 'msg_...'}), which the gateway resolves
    // from the response it stored under the same key.
    references: true,
    toolResult: (body) => body.input.find((item) => item.type === 'function_call_output').output,
  },
  {
    name: "openai.chat('oa') (Chat Completions)",
    model: (openai) => openai.chat('oa'),
    path: '/v1/chat/completions',
    references: false,
    toolResult: (body) => body.messages.find((message) => message.role === 'tool').content,
  },
];

const lookup = (results) =>
  tool({
    description: 'Look something up',
    inputSchema: z.object({ query: z.string() }),
    execute: async ({ query }) => {
      const result = `found ${query} ${nonce()}`;
      results.push(result);
      return result;
    },
  });

for (const kind of MODELS) {
  describe(`@ai-sdk/openai ${kind.name}`, () => {
    test('streamText: many deltas; the text and usage of a direct read', async () => {
      const { urls, fetch } = recordingFetch();
      const prompt = `Tell me about streaming ${nonce()}`;
      const result = streamText({ model: kind.model(provider(fetch)), prompt, maxOutputTokens: 200 });
      const seen = await parts(result.fullStream);
      const deltas = seen.filter((p) => p.type === 'text-delta').map((p) => p.text);
      const direct = await directOpenAI('oa', prompt, { max_tokens: 200 });

      assert.deepEqual(
        seen.filter((p) => p.type === 'error'),
        [],
      );
      assert.equal(deltas.length, 20);
      assert.equal(deltas.join(''), direct.text);
      assert.equal(await result.text, direct.text);
      assert.equal(await result.finishReason, 'stop');
      const usage = await result.usage;
      assert.deepEqual([usage.inputTokens, usage.outputTokens], [direct.usage.prompt_tokens, 20]);
      const { headers } = await result.response;
      assert.equal(headers['x-tokenrelay-route'], 'oa');
      assert.deepEqual(urls, [`${GATEWAY}${kind.path}`]);
    });

    test('generateText: the same answer, not streamed', async () => {
      const { urls, fetch } = recordingFetch();
      const prompt = `Explain backpressure ${nonce()}`;
      const result = await generateText({ model: kind.model(provider(fetch)), prompt, maxOutputTokens: 200 });
      const direct = await directOpenAI('oa', prompt, { max_tokens: 200 });
      assert.equal(result.text, direct.text);
      assert.equal(result.finishReason, 'stop');
      assert.equal(result.usage.outputTokens, 20);
      assert.deepEqual(urls, [`${GATEWAY}${kind.path}`]);
    });

    for (const [how, run] of [
      ['generateText', (args) => generateText(args)],
      [
        'streamText',
        async (args) => {
          const result = streamText(args);
          await parts(result.fullStream);
          return { text: await result.text, steps: await result.steps, finishReason: await result.finishReason };
        },
      ],
    ]) {
      test(`${how} runs a tool loop to its final text (stopWhen: stepCountIs(3))`, async () => {
        const { sent, fetch } = toolLoopFetch();
        const results = [];
        const result = await run({
          model: kind.model(provider(fetch)),
          prompt: `Look up the weather ${nonce()}`,
          tools: { lookup: lookup(results) },
          stopWhen: stepCountIs(3),
        });
        assert.equal(result.steps.length, 2);
        const [first, last] = result.steps;
        assert.equal(first.finishReason, 'tool-calls');
        assert.deepEqual(
          first.toolCalls.map((call) => call.toolName),
          ['lookup'],
        );
        assert.ok(first.toolCalls[0].input.query);
        assert.equal(results.length, 1);
        assert.equal(last.finishReason, 'stop');
        assert.equal(result.finishReason, 'stop');
        assert.ok(result.text.length > 20);
        assert.equal(result.text, last.text);

        assert.deepEqual(
          sent.map((request) => request.url),
          [`${GATEWAY}${kind.path}`, `${GATEWAY}${kind.path}`],
        );
        assert.equal(kind.toolResult(sent[1].body), results[0]);
        if (kind.references) {
          // the first step's message went back as a reference, not repeated
          const references = sent[1].body.input.filter((item) => item.type === 'item_reference');
          assert.equal(references.length, 1);
          assert.match(references[0].id, /^msg_/);
        }
        // and the tool's result reached the upstream (route oa: Chat Completions)
        const upstream = await upstreamRequest(results[0]);
        assert.equal(upstream.path, '/v1/chat/completions');
        assert.deepEqual(upstream.body.messages.at(-1), {
          role: 'tool',
          tool_call_id: first.toolCalls[0].toolCallId,
          content: results[0],
        });
      });
    }
  });
}
