// The OpenAI Agents SDK for Node (@openai/agents): an agent with a function tool runs to its final
// output through the gateway's POST /v1/responses (the SDK's default API), streamed and not, and a
// second run continues the first by previousResponseId. Tracing is off: it would post traces to
// OpenAI. The model is route `open` of tests/servers.py, served by Anthropic Messages, which
// accepts a client's system prompt (the agent's instructions).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Agent, OpenAIResponsesModel, run, setTracingDisabled, tool } from '@openai/agents';
import OpenAI from 'openai';
import { z } from 'zod';

import { GATEWAY, KEY, nonce, toolLoopFetch, upstreamRequest, upstreamRequests } from './support.mjs';

setTracingDisabled(true);

const INSTRUCTIONS = 'You answer weather questions with the get_weather tool.';

/** An agent on route `open` whose model talks to the gateway through `fetch`. */
function weatherAgent(fetch, results) {
  const client = new OpenAI({ baseURL: `${GATEWAY}/v1`, apiKey: KEY, maxRetries: 0, fetch });
  const getWeather = tool({
    name: 'get_weather',
    description: 'The weather now in a city',
    parameters: z.object({ query: z.string() }),
    execute: async ({ query }) => {
      const result = `sunny in ${query} ${nonce()}`;
      results.push(result);
      return result;
    },
  });
  return new Agent({
    name: 'Weather',
    instructions: INSTRUCTIONS,
    model: new OpenAIResponsesModel(client, 'open'),
    tools: [getWeather],
  });
}

/** The final message's text, as the gateway answered it on the last request of the run. */
function lastAnswer(result) {
  const messages = result.newItems.filter((item) => item.type === 'message_output_item');
  return messages.at(-1).content;
}

describe('@openai/agents', () => {
  for (const stream of [false, true]) {
    test(`an agent with a function tool runs to its final output (stream: ${stream})`, async () => {
      const { sent, fetch } = toolLoopFetch();
      const results = [];
      const agent = weatherAgent(fetch, results);
      const question = `Weather in Paris? ${nonce()}`;
      const result = await run(agent, question, { stream });
      if (stream) {
        for await (const _event of result) {
          // the run's events; draining them lets it finish
        }
        await result.completed;
      }

      assert.equal(results.length, 1, 'the tool ran once');
      assert.equal(typeof result.finalOutput, 'string');
      assert.ok(result.finalOutput.length > 20);
      assert.equal(result.finalOutput, lastAnswer(result));
      const kinds = result.newItems.map((item) => item.type);
      assert.ok(kinds.includes('tool_call_item') && kinds.includes('tool_call_output_item'), kinds.join());

      // two requests to the gateway's /v1/responses: the question, then the tool's output
      assert.deepEqual(
        sent.map((request) => request.url),
        [`${GATEWAY}/v1/responses`, `${GATEWAY}/v1/responses`],
      );
      assert.equal(sent[0].body.instructions, INSTRUCTIONS);
      assert.equal(sent[0].body.stream, stream);
      const output = sent[1].body.input.find((item) => item.type === 'function_call_output');
      assert.equal(output.output, results[0]);

      // the Anthropic upstream got the instructions as its system prompt and the tool's result
      const [first] = await upstreamRequests(question);
      assert.equal(first.path, '/v1/messages');
      assert.deepEqual(
        first.body.tools.map((t) => t.name),
        ['get_weather'],
      );
      const second = await upstreamRequest(results[0]);
      const system = [second.body.system].flat().map((block) => block.text ?? block);
      assert.ok(system.join('\n').includes(INSTRUCTIONS), JSON.stringify(system));
      const block = second.body.messages.at(-1).content.find((part) => part.type === 'tool_result');
      assert.equal(block.content, results[0]);
    });
  }

  test('a second run continues the first by previousResponseId (stored by the gateway)', async () => {
    const { fetch } = toolLoopFetch();
    const agent = weatherAgent(fetch, []);
    const first = await run(agent, `Weather in Oslo? ${nonce()}`);
    assert.match(first.lastResponseId, /^resp_/);

    const sent = [];
    const recording = (input, init) => {
      sent.push(JSON.parse(init.body));
      return globalThis.fetch(input, init);
    };
    const question = `And tomorrow? ${nonce()}`;
    const second = await run(weatherAgent(recording, []), question, {
      previousResponseId: first.lastResponseId,
    });
    assert.ok(second.finalOutput.length > 20);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].previous_response_id, first.lastResponseId);
    assert.equal(sent[0].input.length, 1); // only the new turn: the rest is stored

    // the gateway rebuilt the whole conversation for the Anthropic upstream
    const upstream = await upstreamRequest(question);
    const kinds = upstream.body.messages.flatMap((message) =>
      typeof message.content === 'string' ? ['text'] : message.content.map((part) => part.type),
    );
    assert.ok(kinds.includes('tool_use') && kinds.includes('tool_result'), kinds.join());
    const last = upstream.body.messages.at(-1);
    const text = typeof last.content === 'string' ? last.content : last.content.map((p) => p.text).join('');
    assert.equal(text, question);
  });
});
