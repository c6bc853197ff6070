// An ordinary Node app that knows nothing of nodeapp: it listens on a port of its choice.
// Under nodeapp every worker serves the configured sockets instead.
const http = require('http');

const port = Number(process.env.PORT) || 3000;
const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`hello from pid ${process.pid}\n`);
});
server.listen(port, () => {
  console.log(`hello: listening on port ${port} (pid ${process.pid})`);
});
