'use strict';
// Loaded into every worker with `node --require` so that an unmodified app runs under the
// nodeapp shim. What it does, and what it must never do, is in docs/apps.md; in short:
//
// - Sockets by address. The shim passes the listening sockets as fds 3, 4, ... with their
//   addresses. A server that asks for a port (or unix path) gets every inherited socket
//   with that port (path); `listen(0)` and addresses not in `listen` bind as in plain Node.
//   A server whose port matches nothing still gets the unclaimed sockets (an app that
//   hard-codes 8080 under a config that says 3000), unless another server claims them
//   exactly within a moment; the journal names both. The worker is ready once every
//   inherited socket is served.
// - Readiness goes to the shim over Node's IPC channel; `process.send('ready')` from apps
//   ported from PM2 passes through unchanged.
// - The stop signal drains. Without a handler of the app's: stop accepting, answer what is
//   in flight with `Connection: close`, close idle keep-alive connections after a grace,
//   GOAWAY for HTTP/2, close code 1001 for WebSockets, exit once no connection is left.
//   With the app's own handler: the same first steps, then the signal is handed to the
//   app, whose `server.close(cb)` works and calls back once the last connection is gone.
//
// Nothing here runs per request while serving: only connections are tracked. It must never
// throw while loading: a preload error would stop every app from starting.

// Only the worker the shim started: processes the app forks inherit `--require` but not
// the sockets, and must behave as plain Node.
if (!process.env.NODEAPP_LISTEN_FDS) return;

const net = require('net');

const FIRST_FD = 3;
const fdCount = Number(process.env.NODEAPP_LISTEN_FDS) || 0;
let names = [];
try {
  names = JSON.parse(process.env.NODEAPP_LISTEN_NAMES || '[]');
} catch (_) {
  // Without names sockets can still be served by the fallback below.
}
const stopSignal = process.env.NODEAPP_STOP_SIGNAL || 'SIGTERM';
const heartbeatMs = Number(process.env.NODEAPP_HEARTBEAT_MS) || 0;
for (const name of ['LISTEN_FDS', 'LISTEN_NAMES', 'STOP_SIGNAL', 'HEARTBEAT_MS']) {
  delete process.env[`NODEAPP_${name}`];
}

// While draining, a kept-alive connection is closed once it has been idle this long. Not
// at once: a client may have sent its next request already, and closing under it would
// fail that request. A busy client sends within milliseconds and is answered with
// `Connection: close` instead.
const IDLE_GRACE_MS = 1000;
// The longest the app's stop handler waits for kept-alive clients to be told to close.
const HANDOVER_MAX_MS = 2000;
// How long a server whose port matches no address waits for one that matches exactly
// before it takes the unclaimed sockets: an exporter that listens first on a port not in
// `listen` must not take the app's socket.
const FALLBACK_WAIT_MS = 100;

const originalListen = net.Server.prototype.listen;
const netClose = net.Server.prototype.close;

function send(message) {
  if (typeof process.send === 'function' && process.connected) {
    try {
      // With a callback a failed write is reported there, not as an 'error' on process
      // that would end the worker.
      process.send(message, () => {});
    } catch (_) {
      // The shim is gone; the 'disconnect' handler below deals with that.
    }
  }
}

// ---- Sockets by address ----

const sockets = [];
for (let i = 0; i < fdCount; i++) {
  const name = typeof names[i] === 'string' ? names[i] : '';
  const port = name.startsWith('/') ? null : Number(name.slice(name.lastIndexOf(':') + 1));
  sockets.push({ fd: FIRST_FD + i, name, port, path: name.startsWith('/') ? name : null, server: null, listening: false });
}
// Servers of ours (forwarders of extra sockets); their listen is never intercepted.
const internal = new WeakSet();
// Per adopted server: its forwarders and drain state.
const adopted = new Map();
let parked = null;

// What a `listen(...)` call asks for, as Node reads its arguments: `{ port, host }`,
// `{ path }`, `{ fd }`, or null for a handle or anything Node itself would refuse.
function requested(args) {
  const a = args[0];
  if (a === undefined || a === null || typeof a === 'function') return { port: 0 };
  if (typeof a === 'number' || typeof a === 'string') {
    const n = Number(a);
    if (typeof a === 'string' && !(n >= 0)) return { path: require('path').resolve(a) };
    return { port: n, host: typeof args[1] === 'string' ? args[1] : undefined };
  }
  if (typeof a !== 'object' || a._handle || a.handle) return null;
  if (typeof a.fd === 'number') return { fd: a.fd };
  if (a.path != null) return { path: require('path').resolve(String(a.path)) };
  const n = Number(a.port === undefined || a.port === null ? 0 : a.port);
  return n >= 0 ? { port: n, host: typeof a.host === 'string' ? a.host : undefined } : null;
}

const matches = (socket, want) =>
  want.fd !== undefined ? socket.fd === want.fd
    : want.path !== undefined ? socket.path === want.path
      : socket.port === want.port;

// The address asked for, as `listen` in the config would name it.
function describe(want) {
  if (want.path !== undefined) return want.path;
  if (want.fd !== undefined) return `fd ${want.fd}`;
  const host = want.host === undefined || want.host === 'localhost' ? (want.host ? '127.0.0.1' : '0.0.0.0') : want.host;
  return host.includes(':') ? `[${host}]:${want.port}` : `${host}:${want.port}`;
}

net.Server.prototype.listen = function listen(...args) {
  if (internal.has(this) || adopted.has(this)) return originalListen.apply(this, args);
  const want = requested(args);
  if (want === null || want.port === 0) return originalListen.apply(this, args);
  const free = sockets.filter((s) => s.server === null);
  const exact = free.filter((s) => matches(s, want));
  if (exact.length > 0) {
    if (parked !== null && free.length === exact.length) releaseParked();
    return serve(this, exact, args);
  }
  if (sockets.some((s) => matches(s, want))) {
    const holder = sockets.find((s) => matches(s, want));
    send({ nodeapp: 'taken', asked: describe(want), address: holder.name, by: holder.asked });
  } else if (free.length > 0 && parked === null) {
    parked = { server: this, args, want, timer: setTimeout(takeUnclaimed, FALLBACK_WAIT_MS) };
    // Plain Node binds a port synchronously, and apps read address() right after listen().
    const host = want.host === undefined ? '::' : want.host === 'localhost' ? '127.0.0.1' : want.host;
    const family = host.includes(':') ? 'IPv6' : 'IPv4';
    const standIn = want.path !== undefined ? want.path : { address: host, family, port: want.port };
    this.address = () => standIn;
    return this;
  }
  watchAddressInUse(this, want);
  return originalListen.apply(this, args);
};

function releaseParked() {
  const { server, args, want, timer } = parked;
  parked = null;
  delete server.address;
  clearTimeout(timer);
  watchAddressInUse(server, want);
  originalListen.apply(server, args);
}

function takeUnclaimed() {
  const { server, args, want } = parked;
  parked = null;
  delete server.address;
  const free = sockets.filter((s) => s.server === null);
  if (free.length === 0) {
    watchAddressInUse(server, want);
    originalListen.apply(server, args);
    return;
  }
  send({ nodeapp: 'fallback', asked: describe(want), addresses: free.map((s) => s.name) });
  serve(server, free, args, describe(want));
}

// EADDRINUSE on an address not in `listen` is, under nodeapp, usually another worker of
// the same app holding it: say so, then let the error take its usual course.
function watchAddressInUse(server, want) {
  if (want.fd !== undefined) return;
  const onError = (err) => {
    if (err && err.code === 'EADDRINUSE') send({ nodeapp: 'addrinuse', asked: describe(want) });
    server.removeListener('error', onError);
    // Unhandled, the error would have thrown; it still does.
    if (server.listenerCount('error') === 0) throw err;
  };
  server.prependListener('error', onError);
  server.once('listening', () => server.removeListener('error', onError));
}

const FORWARDED_OPTIONS = [
  'allowHalfOpen',
  'pauseOnConnect',
  'noDelay',
  'keepAlive',
  'keepAliveInitialDelay',
  'highWaterMark',
];

// Serves `matched` sockets on `server`: the first directly, the rest through forwarders
// that hand their connections to it.
function serve(server, matched, args, asked) {
  const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
  for (const s of matched) {
    s.server = server;
    s.asked = asked || s.name;
  }
  const state = adopt(server);
  // Node cannot name a unix socket opened from an fd, so address() would return null and
  // frameworks that log it (Fastify) would crash. TCP sockets name themselves.
  if (matched[0].path !== null) {
    const path = matched[0].path;
    server.address = function address() {
      return this.listening ? path : null;
    };
  }
  for (const s of matched.slice(1)) {
    // The app's server options (http's noDelay, keepAlive, ...) apply to the sockets the
    // forwarder accepts.
    const options = {};
    for (const k of FORWARDED_OPTIONS) {
      if (server[k] !== undefined) options[k] = server[k];
    }
    const forwarder = net.createServer(options, (socket) => server.emit('connection', socket));
    internal.add(forwarder);
    state.forwarders.push(forwarder);
    watchClose(state, forwarder);
    forwarder.on('error', (err) => server.emit('error', err));
    forwarder.once('listening', () => served(s));
    originalListen.call(forwarder, { fd: s.fd });
  }
  server.once('listening', () => served(matched[0]));
  const signal = args[0] !== null && typeof args[0] === 'object' ? args[0].signal : undefined;
  if (signal) {
    // As in plain Node: aborting closes the server (and so its forwarders).
    const closeForwarders = () => state.forwarders.forEach((f) => netClose.call(f));
    if (signal.aborted) process.nextTick(closeForwarders);
    else signal.addEventListener('abort', closeForwarders, { once: true });
  }
  return originalListen.call(server, { fd: matched[0].fd, signal }, callback);
}

function served(socket) {
  socket.listening = true;
  send({ nodeapp: 'serving', address: socket.name });
  if (sockets.every((s) => s.listening)) send({ nodeapp: 'listening', pid: process.pid });
}

// ---- Connections, tracked per connection (never per request) ----

const kind = (server) =>
  typeof server.updateSettings === 'function' ? 'h2'
    : typeof server.closeIdleConnections !== 'function' ? 'net'
      : typeof server.addContext === 'function' ? 'https' : 'http';

function adopt(server) {
  const state = {
    kind: kind(server),
    forwarders: [],
    connections: new Map(), // HTTP/1 socket -> when it was last seen busy
    sessions: new Set(), // HTTP/2
    open: 0, // the server and its forwarders that have not closed
    waiting: [],
    appClosed: false,
  };
  adopted.set(server, state);
  watchClose(state, server);
  const track = (socket) => {
    state.connections.set(socket, Date.now());
    socket.once('close', () => state.connections.delete(socket));
  };
  if (state.kind === 'h2') {
    server.prependListener('session', (session) => {
      state.sessions.add(session);
      session.once('close', () => state.sessions.delete(session));
      if (draining) goingAway(session);
    });
    // With `allowHTTP1`, TLS clients that do not offer h2 get HTTP/1.1 on this server.
    server.prependListener('secureConnection', (socket) => {
      if (socket.alpnProtocol !== 'h2') track(socket);
    });
  } else if (state.kind !== 'net') {
    // A TLS server's HTTP lives on the TLS socket, known once the handshake is done.
    server.prependListener(state.kind === 'https' ? 'secureConnection' : 'connection', track);
  }
  return state;
}

// Counts `server` (the app's, or a forwarder of it) as open until it emits 'close', which
// net does once it stopped accepting and its last connection is gone.
function watchClose(state, server) {
  state.open += 1;
  server.once('close', () => {
    state.open -= 1;
    if (state.open === 0) for (const cb of state.waiting.splice(0)) cb();
  });
}

const whenClosed = (state, cb) => (state.open === 0 ? process.nextTick(cb) : state.waiting.push(cb));

// The response a connection is working on; Node clears it once the response is done.
const response = (socket) => socket._httpMessage;
// Upgraded connections (WebSockets) have no HTTP parser left: they belong to the app.
const upgraded = (socket) => !socket.parser && !socket.destroyed;

// ---- Draining ----

let draining = false;
// Set once open WebSockets are to get 1001: at once without a handler of the app's, a
// grace after the hand-over with one. Checked on every tick, so that a WebSocket whose
// handshake was still in progress when the drain began is closed too.
let closingWebSockets = false;

// Stop accepting on every adopted server, and make every HTTP/1 response from now on the
// last on its connection. The app's own `server.close(cb)` keeps working: it calls back
// once the server and its forwarders have no connection left.
function stopAccepting() {
  draining = true;
  const now = Date.now();
  for (const [server, state] of adopted) {
    // Also when not listening: net then emits 'close' once no connection is left.
    // Only those still listening: one the app closed already has emitted (or will emit)
    // its 'close', and a second netClose would emit it again.
    for (const s of [server, ...state.forwarders]) if (s._handle) netClose.call(s);
    Object.defineProperty(server, 'listening', { configurable: true, get: () => !state.appClosed });
    server.close = function close(cb) {
      // Idle connections are closed after the grace, not at once as Node 19+ does.
      state.appClosed = true;
      if (typeof cb === 'function') whenClosed(state, () => cb());
      return this;
    };
    for (const session of state.sessions) goingAway(session);
    for (const socket of state.connections.keys()) {
      state.connections.set(socket, now);
      lastOnConnection(socket);
    }
    // On HTTP/2 only HTTP/1 requests (`allowHTTP1`) get this, and only on a server that
    // has 'request' listeners already: adding one would switch a core-API server to the
    // compatibility layer.
    const http1 = state.kind === 'http' || state.kind === 'https';
    if (http1 || (state.kind === 'h2' && server.listenerCount('request') > 0)) {
      server.prependListener('request', (req, res) => {
        if (req.httpVersionMajor === 1) res.shouldKeepAlive = false;
      });
    }
  }
  // Unref'd: the open connections, not the timer, keep the process alive.
  setInterval(closeIdleConnections, 100).unref();
}

// HTTP/2's graceful shutdown (RFC 9113, 6.8): a first GOAWAY with the highest stream id
// says "start no new stream here" without refusing streams the client sent meanwhile; the
// final one, from close(), comes a grace later and the session ends with its last stream.
function goingAway(session) {
  if (session.closed || session.destroyed) return;
  try {
    session.goaway(0, 2 ** 31 - 1);
  } catch (_) {
    // Destroyed in between: nothing left to tell.
  }
  setTimeout(() => session.closed || session.destroyed || session.close(), IDLE_GRACE_MS).unref();
}

// The response in progress is made the last on its connection only when no pipelined
// request is queued behind it (the parser's latest request is its own); otherwise the
// queued responses would be dropped. Re-checked on every tick as responses advance.
function lastOnConnection(socket) {
  const res = response(socket);
  if (res && !res.headersSent && socket.parser && socket.parser.incoming === res.req) {
    res.shouldKeepAlive = false;
  }
}

function closeIdleConnections() {
  if (closingWebSockets) closeWebSockets();
  const now = Date.now();
  for (const state of adopted.values()) {
    for (const [socket, busySince] of state.connections) {
      // Bytes received since the last tick (a request whose headers are still arriving)
      // count as busy, as they do for Node's own keepAliveTimeout.
      const read = socket.bytesRead;
      if (response(socket) || read !== socket.nodeappBytesRead) {
        socket.nodeappBytesRead = read;
        state.connections.set(socket, now);
        lastOnConnection(socket);
      } else if (socket.parser && now - busySince >= IDLE_GRACE_MS) {
        socket.destroy();
      }
    }
  }
}

// True once no HTTP/1 connection can still be reused by its client: each is gone, or is
// answering a request whose response says `Connection: close`.
function told() {
  for (const state of adopted.values()) {
    for (const socket of state.connections.keys()) {
      const res = response(socket);
      if (socket.parser && (!res || (res.headersSent && res.shouldKeepAlive))) return false;
    }
  }
  return true;
}

// Ends open WebSockets with 1001 (going away) so that their clients reconnect to another
// worker. `ws` (and so socket.io, graphql-ws, ...) keeps its object on the socket under a
// symbol; its own close() does the closing handshake without cutting a frame in two.
// Other upgraded connections are left alone: a frame of ours written into a protocol we
// cannot see would corrupt it.
function closeWebSockets() {
  for (const state of adopted.values()) {
    for (const socket of state.connections.keys()) {
      const ws = upgraded(socket) && webSocketOf(socket);
      if (ws && ws.readyState === 1) ws.close(1001, 'going away');
    }
  }
}

function webSocketOf(socket) {
  for (const sym of Object.getOwnPropertySymbols(socket)) {
    const v = socket[sym];
    if (sym.description === 'websocket' && v && typeof v.close === 'function' && 'readyState' in v) return v;
  }
  return null;
}

function whenAllClosed(cb) {
  let left = adopted.size;
  if (left === 0) return cb();
  for (const state of adopted.values()) {
    whenClosed(state, () => {
      left -= 1;
      if (left === 0) cb();
    });
  }
}

// ---- The stop signal ----

const stopSignals = new Set(['SIGTERM', 'SIGINT', stopSignal]);
// Only so that Node catches these signals; what they do is decided in `emit` below.
const catchSignal = () => {};
// The app's listeners: every one but ours.
// signal-exit (v3 and v4, under many npm packages) only observes: it re-raises the signal
// when it is alone, so it is no handler of the app's.
const SIGNAL_EXIT = 'If there are no other listeners, an exit is coming';
const observer = (l) => Function.prototype.toString.call(l).includes(SIGNAL_EXIT);
const appListeners = (signal) =>
  process.listeners(signal).filter((l) => l !== catchSignal && !observer(l)).length;
// A repeated signal this soon after the first is the same request (timeout(1) sends two).
const REPEAT_WINDOW_MS = 100;
let stopping = null; // { at, handedOver }

// Node delivers signals through process.emit, bound when the first listener is added:
// wrapping it before that lets the app's handlers run after kept-alive clients were told.
const originalEmit = process.emit;
process.emit = function emit(event, ...rest) {
  if (this === process && stopSignals.has(event) && !onStopSignal(event)) return true;
  return originalEmit.call(this, event, ...rest);
};

// Returns whether the signal goes on to the app's handlers now.
function onStopSignal(signal) {
  const now = Date.now();
  if (stopping === null) {
    stopping = { at: now, handedOver: false };
    if (appListeners(signal) === 0) {
      drainAndExit();
    } else {
      handOver(signal);
    }
    return false;
  }
  if (!stopping.handedOver) return false;
  if (appListeners(signal) === 0) {
    // The app removed its handlers and sent the signal to itself (NestJS, terminus): it
    // wants the default action, as in plain Node.
    process.removeListener(signal, catchSignal);
    process.kill(process.pid, signal);
    return false;
  }
  return now - stopping.at >= REPEAT_WINDOW_MS;
}

// No handler of the app's: drain, and exit once every served connection is gone.
function drainAndExit() {
  if (!draining) stopAccepting();
  closingWebSockets = true;
  closeWebSockets();
  whenAllClosed(() => process.exit(0));
}

// The app handles the stop signal: tell kept-alive clients first, then hand it the signal.
function handOver(signal) {
  stopAccepting();
  const started = Date.now();
  const check = setInterval(() => {
    if (!told() && Date.now() - started < HANDOVER_MAX_MS) return;
    clearInterval(check);
    stopping.handedOver = true;
    stopping.at = Date.now();
    // The app may close its WebSockets its own way; those still open after the grace get
    // 1001. Set first: the app's handler may throw.
    setTimeout(() => {
      closingWebSockets = true;
      closeWebSockets();
    }, IDLE_GRACE_MS).unref();
    // From here the app's handler decides when to exit, as in plain Node; the drain still
    // closes every connection, and stop_timeout bounds the rest.
    originalEmit.call(process, signal, signal);
  }, 10);
}

for (const signal of stopSignals) {
  // A listener added before this preload (NODE_OPTIONS=--require) made Node bind the
  // signal to the unwrapped emit: re-add them so that the binding is made again.
  const earlier = process.rawListeners(signal);
  process.removeAllListeners(signal);
  process.on(signal, catchSignal);
  for (const l of earlier) process.on(signal, l);
}

// Heartbeats come from a timer: when the event loop is blocked they stop, and the shim
// aborts the worker after heartbeat_timeout. The timer never keeps the app alive.
if (heartbeatMs > 0 && process.channel) {
  setInterval(() => send({ nodeapp: 'heartbeat' }), heartbeatMs).unref();
}
if (process.channel) {
  // The shim is gone (crashed or killed): stop like on SIGTERM rather than run unowned.
  process.on('disconnect', () => {
    if (stopping === null) stopping = { at: Date.now(), handedOver: false };
    drainAndExit();
  });
  // Listening for 'disconnect' refs the channel; it must not keep a finished app alive.
  // An explicit unref() turns Node's ref counting off for good, so the app's own 'message'
  // listeners (which keep a plain child alive) ref it again here.
  process.channel.unref();
  const refForMessages = (event) => {
    if (event !== 'message') return;
    process.nextTick(() => {
      if (!process.channel) return;
      if (process.listenerCount('message') > 0) process.channel.ref();
      else process.channel.unref();
    });
  };
  process.on('newListener', refForMessages);
  process.on('removeListener', refForMessages);
}
