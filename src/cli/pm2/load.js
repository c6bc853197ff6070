'use strict';
// Evaluates a PM2 ecosystem file the way `pm2 start <file>` does (lib/Common.js
// parseConfig), in a node of its own: `.json` text as a JavaScript expression (comments and
// trailing commas work), `.js`/`.cjs` with require (ES modules through import(), as
// require(esm) gives their namespace), `.mjs` with import(). YAML is read by the caller.
//
// The file may log, read process.env, require modules beside it and leave timers running:
// what it prints goes to stderr, the result is the last stdout line after MARK, and the
// process exits once it is written. process.env is watched so that the importer can say
// which values came from the caller's environment.
const fs = require('fs');
const path = require('path');
const url = require('url');
const vm = require('vm');

const MARK = '@@nodeapp-ecosystem@@';
const [file, kind] = process.argv.slice(process.argv[1] === '-' ? 2 : 1);
const real = process.env;
const read = new Set();
let copied = false;
process.env = new Proxy(real, {
  get(target, key) {
    if (typeof key === 'string') read.add(key);
    return Reflect.get(target, key);
  },
  has(target, key) {
    if (typeof key === 'string') read.add(key);
    return Reflect.has(target, key);
  },
  ownKeys(target) {
    copied = true;
    return Reflect.ownKeys(target);
  },
});
// The file's own output is not the result.
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, ...rest) => process.stderr.write(chunk, ...rest);

function finish(result) {
  let text;
  try {
    text = JSON.stringify(result);
  } catch (err) {
    text = JSON.stringify({ error: `its apps cannot be read as data: ${err.message}` });
  }
  write(`\n${MARK}${text}\n`, () => process.exit(0));
}

function reason(err) {
  if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
    const missing = /Cannot find (?:module|package) '([^']+)'/.exec(err.message);
    const name = missing ? missing[1] : String(err.message).split('\n')[0];
    return `it requires ${JSON.stringify(name)}, which cannot be found from ${path.dirname(file)} (install the app's dependencies there first)`;
  }
  const where = String((err && err.stack) || '')
    .split('\n')
    .find((l) => l.includes(file));
  const what = err instanceof Error ? `${err.name}: ${err.message.split('\n')[0]}` : `threw ${String(err)}`;
  return where ? `${what} (${where.trim().replace(/^at /, 'at ')})` : what;
}

async function load() {
  switch (kind) {
    case 'json':
      return vm.runInThisContext(`(${fs.readFileSync(file, 'utf8')})`, { filename: file });
    case 'js':
      try {
        return require(file);
      } catch (err) {
        if (err && err.code === 'ERR_REQUIRE_ESM') return { ...(await import(url.pathToFileURL(file).href)) };
        throw err;
      }
    case 'mjs':
      return { ...(await import(url.pathToFileURL(file).href)) };
    default:
      throw new Error(`unknown kind ${kind}`);
  }
}

load().then(
  (value) => {
    const exported = typeof value === 'function' ? 'function' : null;
    finish({ value: exported ? null : value, exported, read: [...read], copied });
  },
  (err) => finish({ error: reason(err), read: [...read], copied }),
);
