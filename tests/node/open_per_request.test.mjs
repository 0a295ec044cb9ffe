// A Node app that opens a SQLite database per HTTP-style request with better-sqlite3,
// through a tenantfs mount: 4 worker threads, several tenants and databases, WAL and
// DELETE journal modes. Every row a request wrote must be there at the end, every
// request must read back what its thread wrote before, and integrity_check must be ok.
//
// Needs TENANTFS_MOUNT: the root of a mounted tenantfs (run_node_test.sh starts one).
// TENANTFS_TEST_PLAIN_DIR=1 lets it run on a plain directory, to check the test itself.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import fs from 'node:fs';
import Database from 'better-sqlite3';

const kWorkers = 4;
const kRequestsPerWorker = 150;
const kTenants = 3;
const kDbsPerTenant = 3;
const kBusyTimeoutMs = 10000;

// ------------------------------------------------------------------------------
// Worker: serves `requests` requests, each on a fresh connection that it closes.

function serve({ dbs, requests, worker, seed }) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const mine = new Map(dbs.map((d) => [d.path, new Map()])); // path -> seq -> payload
  const written = [];
  let reads = 0;
  for (let seq = 0; seq < requests; seq++) {
    const { path, mode } = dbs[rnd() % dbs.length];
    const db = new Database(path, { fileMustExist: true, timeout: kBusyTimeoutMs });
    try {
      if (rnd() % 3 !== 0) {
        // Write request: one row in its own transaction.
        const payload = `w${worker} s${seq} ${'x'.repeat(rnd() % 200)} ${rnd().toString(16)}`;
        db.prepare('INSERT INTO t(worker, seq, payload) VALUES (?, ?, ?)').run(worker, seq, payload);
        mine.get(path).set(seq, payload);
        written.push({ path, worker, seq, payload });
      } else {
        // Read request: sees the journal mode and every row this thread wrote before,
        // each through a connection since closed.
        const jm = db.pragma('journal_mode', { simple: true });
        if (jm !== mode) throw new Error(`${path}: journal_mode ${jm}, want ${mode}`);
        const rows = db.prepare('SELECT seq, payload FROM t WHERE worker = ? ORDER BY seq').all(worker);
        const want = mine.get(path);
        if (rows.length !== want.size) {
          throw new Error(`${path}: worker ${worker} sees ${rows.length} of its rows, wrote ${want.size}`);
        }
        for (const r of rows) {
          if (want.get(r.seq) !== r.payload) throw new Error(`${path}: row seq ${r.seq} differs`);
        }
        db.prepare('SELECT count(*) AS n FROM t').get();
        reads++;
      }
    } finally {
      db.close();
    }
  }
  return { written, reads };
}

if (!isMainThread) {
  try {
    parentPort.postMessage({ ok: true, ...serve(workerData) });
  } catch (e) {
    parentPort.postMessage({ ok: false, error: String(e && e.stack ? e.stack : e) });
  }
}

// ------------------------------------------------------------------------------
// Main thread: the tests.

const root = process.env.TENANTFS_MOUNT;
const run = `${process.pid}-${Date.now().toString(36)}`;
const created = []; // tenant dirs, for the clean-up

function assertMounted() {
  assert.ok(root, 'TENANTFS_MOUNT must name the root of a mounted tenantfs');
  if (process.env.TENANTFS_TEST_PLAIN_DIR === '1') return;
  const real = fs.realpathSync(root);
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      return dash > 4 && f[4] === real && f[dash + 1] === 'fuse.tenantfs';
    });
  assert.ok(mounted, `${real} is not a fuse.tenantfs mount`);
}

function makeDatabases(mode) {
  const dbs = [];
  for (let t = 0; t < kTenants; t++) {
    const tenant = `${root}/opr-${mode}-${run}-t${t}`;
    fs.mkdirSync(tenant);
    created.push(tenant);
    for (let d = 0; d < kDbsPerTenant; d++) {
      const path = `${tenant}/app${d}.db`;
      const db = new Database(path, { timeout: kBusyTimeoutMs });
      try {
        const got = db.pragma(`journal_mode = ${mode}`, { simple: true });
        assert.equal(got, mode, `${path}: journal_mode = ${mode}`);
        db.exec(`CREATE TABLE t(
          id INTEGER PRIMARY KEY,
          worker INTEGER NOT NULL,
          seq INTEGER NOT NULL,
          payload TEXT NOT NULL,
          UNIQUE(worker, seq))`);
      } finally {
        db.close();
      }
      dbs.push({ path, mode });
    }
  }
  return dbs;
}

function runWorker(data) {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: data });
    let result = null;
    w.on('message', (m) => (result = m));
    w.on('error', reject);
    w.on('exit', (code) => {
      if (result && result.ok) resolve(result);
      else if (result) reject(new Error(`worker ${data.worker}: ${result.error}`));
      else reject(new Error(`worker ${data.worker} exited (${code}) without a result`));
    });
  });
}

async function openPerRequest(mode) {
  assertMounted();
  const dbs = makeDatabases(mode);
  const results = await Promise.all(
    Array.from({ length: kWorkers }, (_, worker) =>
      runWorker({ dbs, requests: kRequestsPerWorker, worker, seed: 104729 * (worker + 1) }),
    ),
  );

  const expected = new Map(dbs.map((d) => [d.path, []]));
  let writes = 0;
  let reads = 0;
  for (const r of results) {
    for (const w of r.written) expected.get(w.path).push(w);
    writes += r.written.length;
    reads += r.reads;
  }
  assert.equal(writes + reads, kWorkers * kRequestsPerWorker, 'every request was served');
  assert.ok(writes > 0 && reads > 0, `both kinds of request ran (${writes} writes, ${reads} reads)`);

  for (const { path } of dbs) {
    const name = path.slice(path.lastIndexOf('/') + 1);
    const dir = path.slice(0, path.lastIndexOf('/'));
    assert.ok(fs.readdirSync(dir).includes(name), `${name} is listed in ${dir}`);

    const db = new Database(path, { fileMustExist: true, timeout: kBusyTimeoutMs });
    try {
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok', `${path}: integrity_check`);
      assert.equal(db.pragma('journal_mode', { simple: true }), mode, `${path}: journal_mode`);
      const rows = db.prepare('SELECT worker, seq, payload FROM t ORDER BY worker, seq').all();
      const want = expected
        .get(path)
        .map(({ worker, seq, payload }) => ({ worker, seq, payload }))
        .sort((a, b) => a.worker - b.worker || a.seq - b.seq);
      assert.deepEqual(rows, want, `${path}: exactly the rows the requests wrote`);
    } finally {
      db.close();
    }
  }
}

if (isMainThread) {
  test('WAL: 4 worker threads open a database per request', { timeout: 180000 }, () =>
    openPerRequest('wal'),
  );

  test('DELETE journal: 4 worker threads open a database per request', { timeout: 180000 }, () =>
    openPerRequest('delete'),
  );

  // Best effort: leave no test tenants behind on a long-lived mount. Not asserted here;
  // unlink and rmdir have their own tests.
  after(() => {
    for (const tenant of created) {
      try {
        for (const f of fs.readdirSync(tenant)) {
          if (!/-(wal|shm|journal|pos)$/.test(f)) fs.rmSync(`${tenant}/${f}`, { force: true });
        }
        fs.rmdirSync(tenant);
      } catch {
        // ignore
      }
    }
  });
}
