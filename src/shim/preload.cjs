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
// - the stop signal (`stop_signal`, SIGTERM by default; SIGINT and SIGTERM always) drains:
//   stop accepting, answer every request still to come on a kept-alive connection with
//   `Connection: close`, close connections that stay idle, exit once the last connection
//   is gone (unless the app handles the signal itself, and so decides when to exit).
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
const stopSignal = process.env.NODEAPP_STOP_SIGNAL || 'SIGTERM';
delete process.env.NODEAPP_LISTEN_FDS;
delete process.env.NODEAPP_LISTEN_NAMES;
delete process.env.NODEAPP_STOP_SIGNAL;
const heartbeatMs = Number(process.env.NODEAPP_HEARTBEAT_MS) || 0;
delete process.env.NODEAPP_HEARTBEAT_MS;

// While draining, a kept-alive connection is closed once it has been idle this long. Not
// at once: a client may have sent its next request already, and closing under it would
// fail that request. A busy client sends within milliseconds and is answered with
// `Connection: close` instead.
const IDLE_GRACE_MS = 1000;

const originalListen = net.Server.prototype.listen;
const forwarders = new Set();
let primary = null;
let draining = false;
// The primary server's HTTP connections; while draining, when each was last seen busy.
const connections = new Map();

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

// Nothing here runs per request while serving: that would tax every request of every app.
// Only connections are tracked, and what the drain needs is read from them when it starts.
function adopt(server) {
  if (typeof server.closeIdleConnections !== 'function') return; // not HTTP
  server.prependListener('connection', (socket) => {
    connections.set(socket, 0);
    socket.once('close', () => connections.delete(socket));
  });
}

// The response a connection is working on; Node clears it once the response is done.
const busy = (socket) => socket._httpMessage != null;

function closeIdleConnections() {
  const now = Date.now();
  for (const [socket, busySince] of connections) {
    if (busy(socket)) {
      connections.set(socket, now);
    } else if (socket.parser && now - busySince >= IDLE_GRACE_MS) {
      // No parser: the connection was upgraded (WebSocket) and belongs to the app now.
      socket.destroy();
    }
  }
}

function drain(signal) {
  if (draining) return;
  draining = true;
  const now = Date.now();
  for (const socket of connections.keys()) {
    // Idle time is counted from now: when each connection last worked is not known.
    connections.set(socket, now);
    const res = socket._httpMessage;
    if (res && !res.headersSent) res.setHeader('Connection', 'close');
  }
  if (primary !== null) {
    // Requests that arrive from now on, on connections kept alive, are the last on them.
    primary.prependListener('request', (req, res) => res.setHeader('Connection', 'close'));
  }
  const servers = [...forwarders];
  if (primary !== null && primary.listening) servers.push(primary);
  if (servers.length === 0) {
    finish(signal);
    return;
  }
  // Each server's close callback runs once its last connection has ended. net's close,
  // not http's: since Node 19 http.Server#close also closes idle connections at once,
  // racing clients that are sending their next request.
  let open = servers.length;
  for (const server of servers) {
    net.Server.prototype.close.call(server, () => {
      open -= 1;
      if (open === 0) finish(signal);
    });
  }
  // Unref'd: the open connections, not the timer, keep the process alive.
  setInterval(closeIdleConnections, 100).unref();
}

function finish(signal) {
  // An app that handles the signal itself decides when to exit.
  if (signal !== 'disconnect' && process.listenerCount(signal) > 1) return;
  process.exit(0);
}

for (const signal of new Set(['SIGTERM', 'SIGINT', stopSignal])) {
  process.on(signal, () => drain(signal));
}
// Heartbeats come from a timer: when the event loop is blocked they stop, and the shim
// aborts the worker after heartbeat_timeout. The timer never keeps the app alive.
if (heartbeatMs > 0 && process.channel) {
  setInterval(() => send({ nodeapp: 'heartbeat' }), heartbeatMs).unref();
}
if (process.channel) {
  // The shim is gone (crashed or killed): stop like on SIGTERM rather than run unowned.
  process.on('disconnect', () => drain('disconnect'));
  // Listening for 'disconnect' refs the channel; it must not keep a finished app alive.
  process.channel.unref();
}
