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

// While draining, a kept-alive connection is closed once it has been idle this long. Not
// at once: a client may have sent its next request already, and closing under it would
// fail that request. A busy client sends within milliseconds and is answered with
// `Connection: close` instead.
const IDLE_GRACE_MS = 1000;

const originalListen = net.Server.prototype.listen;
const forwarders = new Set();
let primary = null;
let draining = false;
const inflight = new Set();
// HTTP connections of the primary server: requests in progress, and idle since when.
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

function adopt(server) {
  // Prepended so that they run before the app's handlers and see every request.
  server.prependListener('request', (req, res) => {
    const conn = connections.get(req.socket);
    if (conn) {
      conn.busy += 1;
      res.once('close', () => {
        conn.busy -= 1;
        conn.idleSince = Date.now();
      });
    }
    if (draining) {
      res.setHeader('Connection', 'close');
      return;
    }
    inflight.add(res);
    res.once('close', () => inflight.delete(res));
  });
  if (typeof server.closeIdleConnections !== 'function') return; // not HTTP
  server.prependListener('connection', (socket) => {
    connections.set(socket, { busy: 0, idleSince: Date.now() });
    socket.once('close', () => connections.delete(socket));
  });
}

function closeIdleConnections() {
  const now = Date.now();
  for (const [socket, conn] of connections) {
    // No parser: the connection was upgraded (WebSocket) and belongs to the app now.
    if (conn.busy === 0 && socket.parser && now - conn.idleSince >= IDLE_GRACE_MS) {
      socket.destroy();
    }
  }
}

function drain(signal) {
  if (draining) return;
  draining = true;
  for (const res of inflight) {
    if (!res.headersSent) res.setHeader('Connection', 'close');
  }
  inflight.clear();
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
if (process.channel) {
  // The shim is gone (crashed or killed): stop like on SIGTERM rather than run unowned.
  process.on('disconnect', () => drain('disconnect'));
  // Listening for 'disconnect' refs the channel; it must not keep a finished app alive.
  process.channel.unref();
}
