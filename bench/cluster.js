// Node's own cluster module, the round-robin baseline of bench/run: the primary accepts
// every connection and passes it to a worker over IPC (SCHED_RR, Node's default on Linux).
// Usage: WORKERS=2 node cluster.js /srv/hello/server.js
'use strict';
const cluster = require('cluster');
const os = require('os');

const workers = Number(process.env.WORKERS) || os.availableParallelism();
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
} else {
  require(process.argv[2]);
}
