// node_bench.mjs: the user's scenario (TARGETS.md P4). A Node app opens a SQLite
// database per request with better-sqlite3, runs one SELECT and closes it; natively
// on a plain directory and through a tenantfs mount, side by side.
//
//   w4        4 worker threads, each request on a random one of 100 databases
//   c100      100 concurrent clients (a worker thread each), client i on database i
//   c100busy  c100 while one more database takes heavy write transactions
//             (256 KiB per transaction, WAL + FULL): requests to the other databases
//             must not wait on it ("no request waits on another database")
//
// Usage: node bench/node_bench.mjs --native DIR [--mount DIR] [--seconds S]
//                                  [--workers N] [--clients N] [--dbs N] [--machine]
// DIR is a tenantfs mount root or a plain directory; the bench makes tenants nb0..nb9
// and nbw in it. Prints a markdown table; with --machine, lines
//   METRIC <scenario> <side> <req_per_s> <p50_us> <p99_us>
// for tenantfs_bench (which runs this with --node). Measures only; asserts no speed.
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';

// better-sqlite3 is installed once, for the Node tests, in tests/node (scripts/deps).
const require = createRequire(new URL('../tests/node/package.json', import.meta.url));
const Database = require('better-sqlite3');

const kRowsPerDb = 10;
const kTenants = 10;

function dbPath(root, i) {
  return `${root}/nb${i % kTenants}/d${i}`;
}

function nowNs() {
  return process.hrtime.bigint();
}

// ------------------------------------------------------------------------------
// Worker side: one client, driven by messages from the main thread.

function workerMain() {
  parentPort.on('message', (msg) => {
    try {
      if (msg.cmd === 'read') parentPort.postMessage(readLoop(msg));
      else if (msg.cmd === 'write') parentPort.postMessage(writeLoop(msg));
      else if (msg.cmd === 'exit') process.exit(0);
    } catch (e) {
      parentPort.postMessage({ type: 'error', message: String(e && e.stack ? e.stack : e) });
    }
  });
}

function request(path, key) {
  const db = new Database(path, { fileMustExist: true });
  try {
    const row = db.prepare('SELECT v FROM t WHERE id = ?').get(key);
    if (!row || !row.v) throw new Error(`${path}: no row id=${key}`);
  } finally {
    db.close();
  }
}

function waitGate(gate) {
  Atomics.wait(gate, 0, 0);
}

function readLoop({ paths, budgetMs, gate, seed }) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const pick = () => paths[rnd() % paths.length];
  for (let i = 0; i < 10; i++) request(pick(), 1 + (rnd() % kRowsPerDb)); // warm-up
  parentPort.postMessage({ type: 'ready' });
  waitGate(gate);
  const lat = [];
  const t0 = nowNs();
  const deadline = t0 + BigInt(Math.round(budgetMs * 1e6));
  for (;;) {
    const r0 = nowNs();
    request(pick(), 1 + (rnd() % kRowsPerDb));
    const r1 = nowNs();
    lat.push(Number(r1 - r0) / 1000);
    if (r1 >= deadline) break;
  }
  const elapsed = Number(nowNs() - t0) / 1e9;
  return { type: 'done', lat: Float64Array.from(lat), elapsed };
}

// Heavy writer: 64 rows of 4 KiB per transaction, WAL + FULL, until told to stop.
function writeLoop({ path, gate }) {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, v BLOB)');
    const ins = db.prepare('INSERT INTO big(v) VALUES (?)');
    const tx = db.transaction((buf) => {
      for (let i = 0; i < 64; i++) ins.run(buf.subarray(i * 4096, (i + 1) * 4096));
    });
    parentPort.postMessage({ type: 'ready' });
    waitGate(gate);
    let n = 0;
    const t0 = nowNs();
    while (Atomics.load(gate, 1) === 0) {
      tx(crypto.randomBytes(64 * 4096));
      n++;
      // Keep the file bounded: drop old rows now and then (also a write).
      if (n % 50 === 0) db.exec('DELETE FROM big WHERE id <= (SELECT max(id) - 1000 FROM big)');
    }
    const elapsed = Number(nowNs() - t0) / 1e9;
    return { type: 'done', lat: new Float64Array(0), elapsed, txs: n };
  } finally {
    db.close();
  }
}

// ------------------------------------------------------------------------------
// Main side.

function parseArgs(argv) {
  const o = { native: '', mount: '', seconds: 3, workers: 4, clients: 100, dbs: 100, machine: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--native') o.native = val();
    else if (a === '--mount') o.mount = val();
    else if (a === '--seconds') o.seconds = Number(val());
    else if (a === '--workers') o.workers = Number(val());
    else if (a === '--clients') o.clients = Number(val());
    else if (a === '--dbs') o.dbs = Number(val());
    else if (a === '--machine') o.machine = true;
    else throw new Error(`unknown argument: ${a}`);
  }
  if (!o.native) throw new Error('--native DIR is required');
  if (!(o.seconds > 0) || !(o.workers >= 1) || !(o.clients >= 1) || !(o.dbs >= 1)) {
    throw new Error('--seconds, --workers, --clients and --dbs must be positive');
  }
  return o;
}

function mkdirTenant(dir) {
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
  }
}

function setup(root, dbs) {
  for (let t = 0; t < kTenants; t++) mkdirTenant(`${root}/nb${t}`);
  mkdirTenant(`${root}/nbw`);
  for (let i = 0; i < dbs; i++) {
    const db = new Database(dbPath(root, i));
    try {
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`${dbPath(root, i)}: journal_mode=WAL gave ${mode}`);
      db.exec('CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
      const ins = db.prepare('INSERT OR REPLACE INTO t(id, v) VALUES (?, ?)');
      db.transaction(() => {
        for (let k = 1; k <= kRowsPerDb; k++) ins.run(k, `row ${k} of db ${i}`);
      })();
    } finally {
      db.close();
    }
  }
}

class Pool {
  constructor(n) {
    this.workers = [];
    for (let i = 0; i < n; i++) {
      this.workers.push(new Worker(new URL(import.meta.url)));
    }
  }
  // Sends msg to worker i; resolves with its next message of type `type`.
  static next(w, type) {
    return new Promise((resolve, reject) => {
      const onMsg = (m) => {
        if (m.type === 'error') {
          cleanup();
          reject(new Error(m.message));
        } else if (m.type === type) {
          cleanup();
          resolve(m);
        }
      };
      const onErr = (e) => {
        cleanup();
        reject(e);
      };
      const onExit = (code) => {
        cleanup();
        reject(new Error(`worker exited (${code})`));
      };
      const cleanup = () => {
        w.off('message', onMsg);
        w.off('error', onErr);
        w.off('exit', onExit);
      };
      w.on('message', onMsg);
      w.on('error', onErr);
      w.on('exit', onExit);
    });
  }
  async close() {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// Runs readers (assignments[i] = paths of client i) and optionally one writer, all
// released together; returns req/s over the common window and latency percentiles.
async function runScenario(pool, assignments, budgetMs, writerPath) {
  const gate = new Int32Array(new SharedArrayBuffer(8));
  const readers = assignments.map((paths, i) => {
    const w = pool.workers[i];
    const ready = Pool.next(w, 'ready');
    const done = ready.then(() => Pool.next(w, 'done'));
    done.catch(() => {}); // reported through Promise.all below
    w.postMessage({ cmd: 'read', paths, budgetMs, gate, seed: 7919 * (i + 1) });
    return { ready, done };
  });
  let writer = null;
  if (writerPath) {
    const w = pool.workers[assignments.length];
    const ready = Pool.next(w, 'ready');
    const done = ready.then(() => Pool.next(w, 'done'));
    done.catch(() => {});
    w.postMessage({ cmd: 'write', path: writerPath, gate });
    writer = { ready, done };
  }
  await Promise.all([...readers.map((r) => r.ready), ...(writer ? [writer.ready] : [])]);
  Atomics.store(gate, 0, 1);
  Atomics.notify(gate, 0);
  let results;
  try {
    results = await Promise.all(readers.map((r) => r.done));
  } finally {
    Atomics.store(gate, 1, 1); // stop the writer whatever happened
  }
  const wres = writer ? await writer.done : null;
  let n = 0;
  let window = 0;
  for (const r of results) {
    n += r.lat.length;
    window = Math.max(window, r.elapsed);
  }
  const all = new Float64Array(n);
  let off = 0;
  for (const r of results) {
    all.set(r.lat, off);
    off += r.lat.length;
  }
  all.sort();
  const pct = (p) => (n ? all[Math.min(n - 1, Math.round(p * (n - 1)))] : 0);
  return {
    rps: window > 0 ? n / window : 0,
    p50: pct(0.5),
    p99: pct(0.99),
    requests: n,
    writerTxPerSec: wres ? wres.txs / wres.elapsed : null,
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const sides = [{ name: 'native', root: o.native }];
  if (o.mount) sides.push({ name: 'tenantfs', root: o.mount });
  const log = (s) => process.stderr.write(`${s}\n`);

  for (const s of sides) {
    log(`node_bench: creating ${o.dbs} databases under ${s.root}`);
    setup(s.root, o.dbs);
  }
  const all = (root) => Array.from({ length: o.dbs }, (_, i) => dbPath(root, i));
  const scenarios = [
    {
      key: 'w4',
      label: `${o.workers} worker threads, ${o.dbs} DBs`,
      assign: (root) => Array.from({ length: o.workers }, () => all(root)),
    },
    {
      key: 'c100',
      label: `${o.clients} clients, a DB each`,
      assign: (root) => Array.from({ length: o.clients }, (_, i) => [dbPath(root, i % o.dbs)]),
    },
    {
      key: 'c100busy',
      label: `${o.clients} clients + 1 DB under heavy writes`,
      assign: (root) => Array.from({ length: o.clients }, (_, i) => [dbPath(root, i % o.dbs)]),
      writer: (root) => `${root}/nbw/hot`,
    },
  ];

  const pool = new Pool(Math.max(o.workers, o.clients) + 1);
  const budgetMs = o.seconds * 1000;
  const rows = [];
  try {
    for (const sc of scenarios) {
      for (const s of sides) {
        log(`node_bench: ${sc.key} on ${s.name}`);
        const r = await runScenario(pool, sc.assign(s.root), budgetMs, sc.writer ? sc.writer(s.root) : null);
        rows.push({ scenario: sc.key, label: sc.label, side: s.name, ...r });
        if (o.machine) {
          process.stdout.write(
            `METRIC ${sc.key} ${s.name} ${r.rps.toFixed(1)} ${r.p50.toFixed(1)} ${r.p99.toFixed(1)}\n`,
          );
        }
        if (r.writerTxPerSec !== null) log(`node_bench:   heavy writer ${r.writerTxPerSec.toFixed(1)} tx/s`);
      }
    }
  } catch (e) {
    // Workers may sit at the start gate: exit without waiting for them.
    log(`node_bench: FAILED: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
  await pool.close();

  const out = o.machine ? log : (s) => process.stdout.write(`${s}\n`);
  out(`node_bench ${new Date().toISOString()}, node ${process.version}, ${o.seconds} s per scenario and side`);
  out('');
  out('| scenario | side | req/s | p50 µs | p99 µs |');
  out('|---|---|---:|---:|---:|');
  for (const r of rows) {
    out(`| ${r.label} | ${r.side} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(0)} | ${r.p99.toFixed(0)} |`);
  }
}

if (isMainThread) {
  main().catch((e) => {
    process.stderr.write(`node_bench: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
} else {
  workerMain();
}
