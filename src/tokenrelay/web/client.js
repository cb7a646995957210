// tokenrelay's browser client: an ES module, served at /client.js, no build step.
//
//   import { stream } from "https://your-gateway/client.js";
//   const controller = new AbortController();
//   const result = await stream("Explain SSE", {
//     route: "default", signal: controller.signal,
//     onText: (delta) => output.append(delta),
//     onError: (error) => show(error.message),
//   });
//
// It is the article's component with its bugs fixed: a network chunk may end in the middle of an
// event, a line or a UTF-8 character, so partial lines are carried over to the next chunk and the
// bytes are decoded in streaming mode; `[DONE]` ends the whole read loop (not just the inner
// one) and releases the connection; a stream that stops without `[DONE]` is reported as cut off,
// never taken for a complete answer; and errors arrive either as an HTTP status before the
// stream or in-band after it started, both through `onError`.

/** An error from the gateway or the network; `type` is the gateway's error type. */
export class StreamError extends Error {
  constructor(type, message, { status = 0, inBand = false, requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = "StreamError";
    this.type = type;
    this.status = status; // the HTTP status; 200 for an error that arrived in the stream
    this.inBand = inBand; // true when the answer had started before it failed
    this.requestId = requestId;
    this.retryAfter = retryAfter; // seconds, when the gateway said when to retry
  }
}

/**
 * An incremental parser of server-sent events (the WHATWG grammar): feed it text as it arrives,
 * in pieces of any size; it returns each event once its blank line has arrived. Lines may end
 * in LF, CRLF or CR, a CRLF may be split across two pieces, and comments are skipped.
 */
export class SSEParser {
  #buffer = "";
  #data = [];
  #event = "";
  #afterCR = false;
  #started = false;
  lastEventId = "";

  /** @param {string} text @returns {{event: string, data: string, id: string}[]} */
  feed(text) {
    if (this.#afterCR && text.startsWith("\n")) text = text.slice(1);
    this.#afterCR = false;
    let buffer = this.#buffer + text;
    if (!this.#started && buffer.length > 0) {
      this.#started = true;
      if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
    }
    const events = [];
    const breaks = /\r\n|\r|\n/g;
    let start = 0;
    let found;
    while ((found = breaks.exec(buffer)) !== null) {
      const line = buffer.slice(start, found.index);
      start = found.index + found[0].length;
      // A CR at the very end may be the first half of a CRLF whose LF is in the next piece.
      if (found[0] === "\r" && start === buffer.length) this.#afterCR = true;
      this.#line(line, events);
    }
    this.#buffer = buffer.slice(start);
    return events;
  }

  #line(line, events) {
    if (line === "") {
      if (this.#data.length > 0) {
        events.push({ event: this.#event || "message", data: this.#data.join("\n"), id: this.lastEventId });
      }
      this.#data = [];
      this.#event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
  }
}

/**
 * The events of a response body, as they arrive. Bytes are decoded with a streaming
 * TextDecoder, so a character split between two network chunks comes out whole.
 * @param {ReadableStream<Uint8Array>} body
 */
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  let finished = false;
  try {
    while (true) {
      const { value, done } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (const event of parser.feed(text)) yield event;
      if (done) {
        finished = true;
        return;
      }
    }
  } finally {
    // Leaving early ([DONE], an error, the caller's break): let go of the connection.
    if (!finished) reader.cancel().catch(() => {});
  }
}

/**
 * Stream an answer to `prompt` from the gateway's /api/generate.
 *
 * Options: route, signal (an AbortSignal: aborting closes the connection, and the gateway
 * closes the upstream; on a resumable route, which would keep generating for a reconnect, it
 * also sends the DELETE that stops it: see cancelStream), onText(delta, textSoFar),
 * onError(StreamError), onDone(result),
 * onMeta(meta), baseUrl (another origin, which the gateway must allow with cors.allow_origins),
 * headers (e.g. {authorization: "Bearer trk_..."}), maxTokens, temperature.
 *
 * Resolves (never rejects) with {text, usage, finish, meta, error, aborted, status, requestId,
 * streamId, provider, model, attempts, firstTokenMs}; `error` is a StreamError or null;
 * `streamId` is set on a resumable route.
 */
export async function stream(prompt, options = {}) {
  const { route = "default", signal, onText, onError, onDone, onMeta } = options;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const now = () => (globalThis.performance ? performance.now() : Date.now());
  const started = now();
  const result = {
    text: "", usage: null, finish: null, meta: null, error: null, aborted: false,
    status: 0, requestId: null, streamId: null, provider: null, model: null, attempts: null,
    firstTokenMs: null,
  };
  const fail = (error) => {
    result.error = error;
    onError?.(error);
  };
  const body = { prompt, route, include: ["usage", "finish", "meta"] };
  if (options.maxTokens !== undefined) body.maxTokens = options.maxTokens;
  if (options.temperature !== undefined) body.temperature = options.temperature;
  try {
    const response = await fetchImpl(`${options.baseUrl ?? ""}/api/generate`, {
      method: "POST",
      signal,
      headers: { "content-type": "application/json", ...(options.headers ?? {}) },
      body: JSON.stringify(body),
    });
    result.status = response.status;
    result.requestId = response.headers.get("x-request-id");
    result.streamId = response.headers.get("x-tokenrelay-stream-id"); // a resumable route's
    result.provider = response.headers.get("x-tokenrelay-provider");
    result.model = response.headers.get("x-tokenrelay-model");
    result.attempts = response.headers.get("x-tokenrelay-attempts");
    if (!response.ok) {
      fail(await statusError(response, result.requestId));
      return finish(result, onDone);
    }
    let done = false;
    for await (const event of readEvents(response.body)) {
      if (event.data === "[DONE]") {
        done = true;
        break; // ends the read loop itself; readEvents lets go of the connection
      }
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        fail(new StreamError("api_error", `unreadable event from the gateway: ${event.data.slice(0, 200)}`,
          { status: response.status, inBand: true, requestId: result.requestId }));
        return finish(result, onDone);
      }
      if (typeof data.text === "string") {
        result.firstTokenMs ??= now() - started;
        result.text += data.text;
        onText?.(data.text, result.text);
      } else if (data.error) {
        const { type = "api_error", message = "the answer failed" } = data.error;
        fail(new StreamError(type, message, { status: response.status, inBand: true, requestId: result.requestId }));
      } else if (data.usage) result.usage = data.usage;
      else if (data.finish) result.finish = data.finish;
      else if (data.meta) {
        result.meta = data.meta;
        onMeta?.(data.meta);
      }
    }
    if (!done && !result.error) {
      fail(new StreamError("stream_cut",
        "the connection closed before the answer finished; what arrived is incomplete",
        { status: response.status, inBand: true, requestId: result.requestId }));
    }
  } catch (error) {
    if (error?.name === "AbortError" || signal?.aborted) {
      result.aborted = true;
      if (result.streamId) cancelStream(result.streamId, options); // Stop means stop
    } else fail(new StreamError("network", `could not reach the gateway: ${error?.message ?? error}`, { requestId: result.requestId }));
  }
  return finish(result, onDone);
}

/**
 * Stop a resumable stream for good (docs/resume.md). Aborting a fetch looks to the gateway like
 * a dropped connection, which a resumable route keeps generating through for a reconnect; this
 * DELETE says the stop is deliberate, so the upstream stops now. Only the caller who started the
 * stream may stop it: pass the same `headers` (API key). Resolves true once the gateway agreed.
 */
export async function cancelStream(streamId, options = {}) {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  try {
    const response = await fetchImpl(`${options.baseUrl ?? ""}/v1/streams/${encodeURIComponent(streamId)}`, {
      method: "DELETE",
      headers: options.headers ?? {},
      keepalive: true, // sent even when the page is being left
    });
    return response.status === 204;
  } catch {
    return false;
  }
}

function finish(result, onDone) {
  onDone?.(result);
  return result;
}

async function statusError(response, requestId) {
  const retry = Number(response.headers.get("retry-after"));
  const details = { status: response.status, requestId, retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null };
  const text = await response.text().catch(() => "");
  try {
    const { error } = JSON.parse(text);
    if (error?.message) return new StreamError(error.type ?? "api_error", error.message, details);
  } catch {
    // not JSON: a proxy's page or plain text; show it as it is
  }
  return new StreamError("api_error", text.trim().slice(0, 500) || `HTTP ${response.status}`, details);
}
