// The official `openai` Node SDK on the gateway's POST /v1/responses: responses.create streamed
// and not, responses.stream's accumulator, a function tool round trip, reasoning summaries, and
// stored responses (previous_response_id, retrieve, input_items, delete, one key never reading
// another's). Route `oa` is served by Chat Completions and `an` by Anthropic Messages: every
// answer here crosses dialects, and the simulator's log shows what the upstream was sent.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI, { BadRequestError, NotFoundError } from 'openai';

import { GATEWAY, KEY, nonce, OTHER_KEY, upstreamRequest } from './support.mjs';

const UPSTREAM_PATH = { oa: '/v1/chat/completions', an: '/v1/messages' };
const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'Weather now',
  parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
  strict: false,
};

function client(apiKey = KEY) {
  return new OpenAI({ baseURL: `${GATEWAY}/v1`, apiKey, maxRetries: 0 });
}

/** Every event of a streamed response, in order. */
async function events(stream) {
  const seen = [];
  for await (const event of stream) seen.push(event);
  return seen;
}

/** The upstream conversation as (role, text) pairs, whichever dialect the route speaks. */
function upstreamTurns(body) {
  const text = (content) =>
    typeof content === 'string'
      ? content
      : content
          .filter((part) => part.type === 'text')
          .map((part) => part.text)
          .join('');
  return body.messages
    .filter((message) => message.role !== 'system')
    .map((message) => [message.role, text(message.content)]);
}

for (const route of ['oa', 'an']) {
  describe(`openai SDK responses on route ${route} (upstream ${UPSTREAM_PATH[route]})`, () => {
    test('create, create({stream: true}) and stream() give one answer; the stream is exact', async () => {
      const oa = client();
      const input = `Tell me about streaming ${nonce()}`;
      const { data: whole, response } = await oa.responses.create({ model: route, input }).withResponse();
      assert.equal(whole.status, 'completed');
      assert.match(whole.id, /^resp_/);
      assert.equal(whole.object, 'response');
      assert.equal(whole.output.length, 1);
      assert.match(whole.output[0].id, /^msg_/);
      assert.equal(whole.output_text.split(' ').length, 20); // the simulator's answer length
      assert.equal(whole.usage.output_tokens, 20);
      assert.equal(whole.usage.total_tokens, whole.usage.input_tokens + 20);
      assert.equal(response.headers.get('x-tokenrelay-route'), route);
      assert.equal((await upstreamRequest(input)).path, UPSTREAM_PATH[route]);

      const streamed = await events(await oa.responses.create({ model: route, input, stream: true }));
      assert.deepEqual(
        streamed.map((event) => event.sequence_number),
        streamed.map((_, i) => i),
      );
      const kinds = streamed.map((event) => event.type);
      assert.deepEqual(kinds.slice(0, 4), [
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
      ]);
      assert.deepEqual(kinds.slice(-4), [
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.completed',
      ]);
      const deltas = streamed.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta);
      assert.equal(deltas.length, 20);
      assert.equal(deltas.join(''), whole.output_text);
      const completed = streamed.at(-1).response;
      assert.equal(completed.status, 'completed');
      assert.deepEqual(completed.usage, whole.usage);

      const helper = oa.responses.stream({ model: route, input });
      const final = await helper.finalResponse();
      assert.equal(final.output_text, whole.output_text);
      assert.equal(final.status, 'completed');
    });

    test('a function tool round trip: the call, then its output, reach the upstream', async () => {
      const oa = client();
      const question = `Weather in Paris? ${nonce()}`;
      const first = await oa.responses.create(
        { model: route, input: question, tools: [WEATHER] },
        { headers: { 'x-sim-tool': 'auto', 'x-sim-tokens': '2' } }, // forwarded to the simulator
      );
      const calls = first.output.filter((item) => item.type === 'function_call');
      assert.equal(calls.length, 1);
      const [call] = calls;
      assert.equal(call.name, 'get_weather');
      assert.match(call.id, /^fc_/);
      assert.ok(JSON.parse(call.arguments).query);
      assert.equal(first.status, 'completed');

      const output = `sunny, 21C ${nonce()}`;
      const second = await oa.responses.create({
        model: route,
        input: [
          { role: 'user', content: question },
          ...first.output,
          { type: 'function_call_output', call_id: call.call_id, output },
        ],
        tools: [WEATHER],
      });
      assert.equal(second.status, 'completed');
      assert.ok(second.output_text.length > 0);
      assert.deepEqual(
        second.output.map((item) => item.type),
        ['message'],
      );
      const upstream = (await upstreamRequest(output)).body;
      const last = upstream.messages.at(-1);
      if (route === 'an') {
        assert.deepEqual(last.content, [{ type: 'tool_result', tool_use_id: call.call_id, content: output }]);
      } else {
        assert.deepEqual(last, { role: 'tool', tool_call_id: call.call_id, content: output });
      }
    });

    test('a reasoning model: the summary streams and comes back as a reasoning item', async () => {
      const oa = client();
      const stream = oa.responses.stream(
        { model: route, input: `Think first ${nonce()}`, reasoning: { effort: 'low', summary: 'auto' } },
        { headers: { 'x-sim-thinking-tokens': '4', 'x-sim-tokens': '3' } },
      );
      const summary = [];
      for await (const event of stream) {
        if (event.type === 'response.reasoning_summary_text.delta') summary.push(event.delta);
      }
      const final = await stream.finalResponse();
      assert.deepEqual(
        final.output.map((item) => item.type),
        ['reasoning', 'message'],
      );
      const [reasoning] = final.output;
      assert.match(reasoning.id, /^rs_/);
      assert.equal(summary.length, 4);
      assert.equal(reasoning.summary[0].text, summary.join(''));
      assert.equal(final.output_text.split(' ').length, 3);
      assert.equal(final.usage.output_tokens_details.reasoning_tokens, 4);
    });

    test('previous_response_id continues a stored response across two calls', async () => {
      const oa = client();
      const first = await oa.responses.create({ model: route, input: `My name is Ada ${nonce()}.` });
      const question = `What is my name? ${nonce()}`;
      const stream = await oa.responses.create({
        model: route,
        previous_response_id: first.id,
        input: question,
        stream: true,
      });
      const final = (await events(stream)).at(-1).response;
      assert.equal(final.status, 'completed');
      assert.equal(final.previous_response_id, first.id);

      // the gateway rebuilt the conversation from what it stored, for an upstream of another API
      const upstream = await upstreamRequest(question);
      assert.equal(upstream.path, UPSTREAM_PATH[route]);
      assert.deepEqual(upstreamTurns(upstream.body), [
        ['user', (await oa.responses.inputItems.list(first.id)).data[0].content[0].text],
        ['assistant', first.output_text],
        ['user', question],
      ]);
    });
  });
}

describe('openai SDK: stored responses belong to their key', () => {
  test('retrieve, input_items.list and delete; a deleted response is a 404', async () => {
    const oa = client();
    const input = `Remember this ${nonce()}`;
    const made = await oa.responses.create({ model: 'an', input });
    const read = await oa.responses.retrieve(made.id);
    assert.equal(read.id, made.id);
    assert.equal(read.status, 'completed');
    assert.equal(read.output_text, made.output_text);
    assert.deepEqual(read.usage, made.usage);
    const items = [];
    for await (const item of oa.responses.inputItems.list(made.id)) items.push(item);
    assert.equal(items.length, 1);
    assert.equal(items[0].role, 'user');
    assert.deepEqual(
      items[0].content.map((part) => part.text),
      [input],
    );

    const { response } = await oa.responses.delete(made.id).withResponse();
    assert.equal(response.status, 200);
    await assert.rejects(oa.responses.retrieve(made.id), (error) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.equal(error.status, 404);
      return true;
    });
    await assert.rejects(oa.responses.delete(made.id), NotFoundError);
  });

  test('a second key can neither read, delete nor continue the first key\'s response', async () => {
    const mine = client(KEY);
    const theirs = client(OTHER_KEY);
    const made = await mine.responses.create({ model: 'oa', input: `Private ${nonce()}` });

    await assert.rejects(theirs.responses.retrieve(made.id), (error) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.equal(error.status, 404);
      assert.match(error.message, new RegExp(`Response with id '${made.id}' not found`));
      return true;
    });
    await assert.rejects(theirs.responses.delete(made.id), NotFoundError);
    await assert.rejects(
      theirs.responses.create({ model: 'oa', previous_response_id: made.id, input: 'And then?' }),
      (error) => {
        assert.ok(error instanceof BadRequestError, String(error));
        assert.equal(error.code, 'previous_response_not_found');
        assert.equal(error.param, 'previous_response_id');
        return true;
      },
    );
    // still there for its owner
    assert.equal((await mine.responses.retrieve(made.id)).output_text, made.output_text);
  });

  test('an anonymous caller is told to send an API key to continue a response', async () => {
    const made = await client().responses.create({ model: 'oa', input: `Hello ${nonce()}` });
    const anonymous = new OpenAI({ baseURL: `${GATEWAY}/v1`, apiKey: 'not-a-tokenrelay-key', maxRetries: 0 });
    await assert.rejects(
      anonymous.responses.create({ model: 'oa', previous_response_id: made.id, input: 'And then?' }),
      (error) => {
        assert.ok(error instanceof BadRequestError, String(error));
        assert.equal(error.param, 'previous_response_id');
        assert.match(error.message, /send an API key/);
        return true;
      },
    );
  });
});
