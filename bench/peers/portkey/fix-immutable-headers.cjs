// Preload for @portkey-ai/gateway 1.15.2 on Node 20+, loaded by bench/peers.py as
//     node --require ./fix-immutable-headers.cjs node_modules/@portkey-ai/gateway/build/start-server.js
// so that the gateway can answer chat completions at all (streamed or not) on this machine.
//
// THE FAILURE (Portkey issues 1389 and 1550). Every chat completion answers 500
// {"status":"failure","message":"Something went wrong"} and the gateway logs
//     TypeError: immutable
//         at _Headers.append (node:internal/deps/undici/undici)
//         at ResponseService.updateHeaders   (build/start-server.js, class `ru` in 1.15.2)
//         at ResponseService.create
// The path, in the published build:
//   1. the upstream answer comes from fetch(): a native (undici) Response whose Headers object has
//      the fetch spec's "immutable" guard;
//   2. the stream handler (`Cd` in the build) re-wraps it as `new Response(transformedStream, upstream)`,
//      passing the upstream Response itself as the init;
//   3. ResponseService.updateHeaders then appends x-portkey-* headers and deletes content-length,
//      content-encoding and transfer-encoding on that new Response's headers.
// Step 3 is fine with the WHATWG Response constructor, which always copies init.headers into a
// fresh, mutable Headers. But @hono/node-server (>= 1.14.3, its PR 242; 1.19.x is what npm
// resolves for the gateway's "^1.3.3") replaces globalThis.Response, when `serve()` is called,
// with a "lightweight" Response that keeps a reference to init.headers instead of copying it; so
// in step 3 `response.headers` IS the upstream's immutable Headers, and append() throws.
//
// WHAT THIS PRELOAD CHANGES. Exactly one thing: once @hono/node-server has installed its
// lightweight Response (it does so just before it creates the HTTP server, so we hook
// http.createServer to run right after), globalThis.Response is replaced by a transparent Proxy of
// that same class whose only difference is in construction:
//   - `new Response(body, init)` where init is a native Response (not a lightweight one) is
//     constructed as `new Response(body, {status, statusText, headers: new Headers(init.headers)})`;
//   - where init is a plain object whose `headers` is a Headers object, that Headers object is
//     copied the same way (`{...init, headers: new Headers(init.headers)}`).
// That is the re-wrap Portkey's PR 1551 does in ResponseService.create (clone into a new Response
// with copied status, statusText, body and headers before updateHeaders mutates them), done at the
// point where the lightweight class dropped the copy the WHATWG constructor makes, so it covers
// every handler that builds a Response from the upstream one (chat completions, completions,
// embeddings, ...). The body is passed through untouched (the same ReadableStream), so streaming,
// backpressure and cancellation are unchanged, and hono's fast path for lightweight responses is
// kept. Cost: one Headers copy per response, which the native constructor would make anyway.
// Lightweight responses passed as init, and inits without a Headers object, are left alone.
//
// NOT COVERED: a response Portkey hands to updateHeaders without constructing a new one (its
// `isResponseAlreadyMapped` path, e.g. /v1/responses streaming of issue 1550, which PR 1551
// targets) still carries fetch's immutable headers; the benchmark does not use that endpoint.
'use strict';

const http = require('node:http');
const { syncBuiltinESMExports } = require('node:module');

const NativeResponse = globalThis.Response; // undici's, captured before hono replaces it
let installed = false;

function ownHeaders(init) {
  if (init === null || typeof init !== 'object') return init;
  if (init instanceof NativeResponse) {
    return { status: init.status, statusText: init.statusText, headers: new Headers(init.headers) };
  }
  if (init.headers instanceof Headers) return { ...init, headers: new Headers(init.headers) };
  return init;
}

function wrapGlobalResponse() {
  const Lightweight = globalThis.Response;
  if (installed || Lightweight === NativeResponse) return; // hono kept the native one: nothing to fix
  installed = true;
  const Patched = new Proxy(Lightweight, {
    construct(target, args, newTarget) {
      if (args.length > 1 && !(args[1] instanceof target)) {
        args = [args[0], ownHeaders(args[1]), ...args.slice(2)];
      }
      return Reflect.construct(target, args, newTarget === Patched ? target : newTarget);
    },
  });
  Object.defineProperty(globalThis, 'Response', {
    value: Patched,
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

// @hono/node-server's createAdaptorServer() calls getRequestListener() (which swaps
// globalThis.Response) and then http.createServer(); it imports createServer from "http" by name,
// so the ESM view of the builtin is re-synced after the patch.
const createServer = http.createServer;
http.createServer = function createServerAfterHonoGlobals(...args) {
  wrapGlobalResponse();
  return createServer.apply(this, args);
};
syncBuiltinESMExports();
