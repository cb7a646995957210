// Preload for @portkey-ai/gateway, loaded by bench/peers.py with `node --require`: the published
// start-server.js calls @hono/node-server's serve({port}) without a hostname, so it listens on
// every interface. The benchmark must stay on loopback, so a listen() given a port but no host
// (`listen(port)`, `listen(port, cb)`, `listen(port, undefined, cb)`) gets 127.0.0.1 as its host.
// Nothing else changes; a listen() that names a host, a path or an options object is left alone.
'use strict';

const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const port = args[0];
  const isPort = typeof port === 'number' || (typeof port === 'string' && /^\d+$/.test(port));
  if (isPort && (args.length === 1 || args[1] === undefined || typeof args[1] === 'function')) {
    const rest = args[1] === undefined ? args.slice(2) : args.slice(1);
    args = [port, '127.0.0.1', ...rest];
  }
  return listen.apply(this, args);
};
