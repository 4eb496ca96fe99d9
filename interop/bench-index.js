#!/usr/bin/env node
'use strict'
// JS kappa-core 6 indexing baseline, for comparison with kappa-rs views.
//
// Usage: node bench-index.js [--n 100000] [--runs 3] [--batch 1000] [--dir BASE]
//
// For each measurement of each run, a fresh kappa-core 6 (`kappa(ram, {valueEncoding:
// 'json'})`, random-access-memory 3 feeds) gets ONE writer with --n entries
// {key: "k<i>", value: i}, appended in append([...]) batches of --batch (not timed).
// Then a view is installed on the existing data and indexed from scratch; the timed
// span is core.use(...) until core.ready(name, cb) fires:
//  (a) sum:       raw kappa-core view, maxBatch 100, sums entry.value.value in memory;
//  (b) kv_memdb:  kappa-view-kv 2.0.2 on memdb(), maxBatch 100;
//  (c) kv_level:  kappa-view-kv 2.0.2 on level(dir) (leveldown) in a fresh temp dir under
//                 BASE (default os.tmpdir()), closed and removed afterwards.
// kv map: (entry, next) => next(null, [{key: entry.value.key, id: entry.key + '@' +
// entry.seq, links: []}]).
// After each measurement the view is checked: sum === n*(n-1)/2, or kv get("k<n-1>")
// returns exactly one head whose value is n-1. A failed check is an error (exit 1).
// Output: one JSON line; *_per_s are medians over the runs, *_runs_s / *_runs_per_s list
// every run.

const fs = require('fs')
const os = require('os')
const path = require('path')
const kappa = require('kappa-core')
const ram = require('random-access-memory')
const kv = require('kappa-view-kv')
const memdb = require('memdb')
const level = require('level')
const { call, parsePositiveInt, runMain, usageError } = require('./lib/common')

const USAGE = 'usage: node bench-index.js [--n N] [--runs R] [--batch B] [--dir BASE]'

function parseArgs (argv) {
  const o = { n: 100000, runs: 3, batch: 1000, dir: os.tmpdir() }
  const num = { '--n': 'n', '--runs': 'runs', '--batch': 'batch' }
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let v
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq) }
    if (num[a]) {
      if (v === undefined) v = argv[++i]
      o[num[a]] = parsePositiveInt(a, v)
    } else if (a === '--dir') {
      o.dir = v !== undefined ? v : argv[++i]
      if (!o.dir) throw usageError('--dir needs a value')
    } else {
      throw usageError(`unknown argument ${a}`)
    }
  }
  return o
}

function rate (count, secs) {
  return secs > 0 ? Math.round(count / secs) : null
}

function median (xs) {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((p, q) => p - q)
  if (!s.length) return null
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function kvMap (entry, next) {
  next(null, [{ key: entry.value.key, id: entry.key + '@' + entry.seq, links: [] }])
}

// A fresh core with one writer holding n entries; resolves once all are appended.
async function makeCore (o) {
  const core = kappa(ram, { valueEncoding: 'json' })
  core.on('error', (err) => {
    process.stderr.write(`error: indexer: ${err && err.message ? err.message : err}\n`)
    process.exit(1)
  })
  const feed = await new Promise((resolve, reject) => {
    core.writer('local', (err, f) => (err ? reject(err) : resolve(f)))
  })
  for (let start = 0; start < o.n; start += o.batch) {
    const end = Math.min(o.n, start + o.batch)
    const vals = []
    for (let i = start; i < end; i++) vals.push({ key: `k${i}`, value: i })
    await call(feed, 'append', vals)
  }
  if (feed.length !== o.n) throw new Error(`writer length ${feed.length}, expected ${o.n}`)
  return core
}

// Install `view` as `name` and time use() .. ready(name).
function timeIndex (core, name, view) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint()
    core.use(name, view)
    core.ready(name, () => {
      const t1 = process.hrtime.bigint()
      resolve(Number(t1 - t0) / 1e9)
    })
  })
}

async function checkKv (core, name, n) {
  const lastKey = `k${n - 1}`
  const heads = await call(core.api[name], 'get', lastKey)
  if (!Array.isArray(heads) || heads.length !== 1 || !heads[0].value || heads[0].value.value !== n - 1) {
    throw new Error(`${name}: get(${lastKey}) returned ${JSON.stringify(heads)}, expected one head with value ${n - 1}`)
  }
}

async function measureSum (o) {
  const core = await makeCore(o)
  let sum = 0
  const view = {
    maxBatch: 100,
    map (entries, next) {
      for (const e of entries) sum += e.value.value
      next()
    },
    api: { get (core, cb) { cb(null, sum) } }
  }
  const secs = await timeIndex(core, 'sum', view)
  const got = await call(core.api.sum, 'get')
  const want = o.n * (o.n - 1) / 2
  if (got !== want) throw new Error(`sum view: sum ${got}, expected ${want}`)
  await call(core._logs, 'close')
  return secs
}

async function measureKvMemdb (o) {
  const core = await makeCore(o)
  const db = memdb()
  const secs = await timeIndex(core, 'kv', kv(db, kvMap, { maxBatch: 100 }))
  await checkKv(core, 'kv', o.n)
  await call(core._logs, 'close')
  await call(db, 'close')
  return secs
}

async function measureKvLevel (o) {
  const dir = fs.mkdtempSync(path.join(o.dir, 'kappa-rs-bench-index-'))
  let db
  try {
    const core = await makeCore(o)
    db = level(dir)
    await new Promise((resolve, reject) => db.open((err) => (err ? reject(err) : resolve())))
    const secs = await timeIndex(core, 'kv', kv(db, kvMap, { maxBatch: 100 }))
    await checkKv(core, 'kv', o.n)
    await call(core._logs, 'close')
    return secs
  } finally {
    if (db) await call(db, 'close').catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main () {
  const o = parseArgs(process.argv.slice(2))
  fs.mkdirSync(o.dir, { recursive: true })
  const measures = [
    ['sum_memory', measureSum],
    ['kv_memdb', measureKvMemdb],
    ['kv_level', measureKvLevel]
  ]
  const secs = { sum_memory: [], kv_memdb: [], kv_level: [] }
  const t0 = process.hrtime.bigint()
  for (let k = 0; k < o.runs; k++) {
    for (const [name, fn] of measures) {
      if (global.gc) global.gc()
      secs[name].push(await fn(o))
    }
  }
  const out = {}
  for (const [name] of measures) out[`${name}_per_s`] = rate(o.n, median(secs[name]))
  out.n = o.n
  out.runs = o.runs
  out.node = process.version
  out.batch = o.batch
  out.max_batch = 100
  for (const [name] of measures) {
    out[`${name}_runs_s`] = secs[name].map((s) => Math.round(s * 1e4) / 1e4)
    out[`${name}_runs_per_s`] = secs[name].map((s) => rate(o.n, s))
  }
  out.total_s = Math.round(Number(process.hrtime.bigint() - t0) / 1e7) / 100
  out.peak_rss_mb = Math.round(process.resourceUsage().maxRSS / 1024)
  out.versions = {
    'kappa-core': require('kappa-core/package.json').version,
    'kappa-view-kv': require('kappa-view-kv/package.json').version,
    memdb: require('memdb/package.json').version,
    level: require('level/package.json').version
  }
  out.storage = 'random-access-memory (feeds)'
  process.stdout.write(JSON.stringify(out) + '\n')
}

runMain(USAGE, main)
