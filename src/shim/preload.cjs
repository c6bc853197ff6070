'use strict';
// Loaded into every worker with `node --require` so that an unmodified app runs under the
// nodeapp shim:
//
// - the first server the app starts (`server.listen(3000)`, `listen({port, host})`,
//   `app.listen(...)`, `fastify.listen(...)`) is served on the sockets the shim passed as
//   fds 3, 4, ... whatever port or path it asked for, so every worker accepts on the same
//   sockets that systemd holds;
// - readiness goes to the shim over Node's IPC channel once those sockets are listening,
//   and `process.send('ready')` from apps ported from PM2 passes through unchanged;
// - SIGTERM/SIGINT drain: stop accepting, answer requests in flight with
//   `Connection: close`, close idle keep-alive connections, exit once the last
//   connection is gone (unless the app handles the signal itself).
//
// It must never throw while loading: a preload error would stop every app from starting.

const net = require('net');

const FIRST_FD = 3;
const fdCount = Number(process.env.NODEAPP_LISTEN_FDS) || 0;
let names = [];
try {
  names = JSON.parse(process.env.NODEAPP_LISTEN_NAMES || '[]');
} catch (_) {
  // Without names only server.address() on unix sockets is poorer; nothing else needs them.
}
delete process.env.NODEAPP_LISTEN_FDS;
delete process.env.NODEAPP_LISTEN_NAMES;

const originalListen = net.Server.prototype.listen;
const forwarders = new Set();
let primary = null;
let draining = false;
const inflight = new Set();

function send(message) {
  if (typeof process.send === 'function' && process.connected) {
    try {
      process.send(message);
    } catch (_) {
      // The shim is gone; the 'disconnect' handler below deals with that.
    }
  }
}

net.Server.prototype.listen = function listen(...args) {
  if (primary !== null || fdCount === 0 || forwarders.has(this)) {
    return originalListen.apply(this, args);
  }
  primary = this;
  const callback = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
  adopt(this);
  // Node cannot name a unix socket opened from an fd, so address() would return null and
  // frameworks that log it (Fastify) would crash. TCP sockets name themselves.
  const path = names[0];
  if (typeof path === 'string' && path.startsWith('/')) {
    this.address = function address() {
      return this.listening ? path : null;
    };
  }

  let pending = fdCount;
  const onListening = () => {
    pending -= 1;
    if (pending === 0) send({ nodeapp: 'listening', pid: process.pid });
  };
  // Any further socket is served by this same server: its connections are handed over.
  for (let fd = FIRST_FD + 1; fd < FIRST_FD + fdCount; fd++) {
    const extra = net.createServer((socket) => this.emit('connection', socket));
    forwarders.add(extra);
    extra.on('error', (err) => this.emit('error', err));
    extra.once('listening', onListening);
    originalListen.call(extra, { fd });
  }
  this.once('listening', onListening);
  return originalListen.call(this, { fd: FIRST_FD }, callback);
};

function adopt(server) {
  // Prepended so that it runs before the app's handler and sees every request.
  server.prependListener('request', (req, res) => {
    if (draining) {
      res.setHeader('Connection', 'close');
      return;
    }
    inflight.add(res);
    res.once('close', () => inflight.delete(res));
  });
}

function drain(signal) {
  if (draining) return;
  draining = true;
  for (const res of inflight) {
    if (!res.headersSent) res.setHeader('Connection', 'close');
  }
  inflight.clear();
  for (const extra of forwarders) extra.close();
  if (primary === null || !primary.listening) {
    finish(signal);
    return;
  }
  primary.close(() => finish(signal));
  if (typeof primary.closeIdleConnections === 'function') {
    // Keep-alive connections that go idle after their last response are closed as they
    // do so; the timer is unref'd so that it never holds the process open.
    primary.closeIdleConnections();
    setInterval(() => primary.closeIdleConnections(), 50).unref();
  }
}

function finish(signal) {
  // An app that handles the signal itself decides when to exit.
  if (signal !== 'disconnect' && process.listenerCount(signal) > 1) return;
  process.exit(0);
}

process.on('SIGTERM', () => drain('SIGTERM'));
process.on('SIGINT', () => drain('SIGINT'));
if (process.channel) {
  // The shim is gone (crashed or killed): stop like on SIGTERM rather than run unowned.
  process.on('disconnect', () => drain('disconnect'));
  // Listening for 'disconnect' refs the channel; it must not keep a finished app alive.
  process.channel.unref();
}
