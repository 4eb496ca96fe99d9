#!/usr/bin/env node
'use strict'
// JS hypercore 8.14.0 baseline on random-access-file storage, for comparison with kappa-rs.
//
// Usage: node bench-hypercore.js [--n 100000] [--single-n 20000] [--gets 100000]
//                                [--batch 1000] [--runs 1] [--dir BASE] [--keep]
//
// Every run uses fresh feeds in a new temp dir under BASE (default os.tmpdir()):
//  (a) feed A: --n entries appended with feed.append([...]) in batches of --batch
//      (default 1000), each batch awaited (one signature per batch);
//  (b) feed B: --single-n entries appended one by one with feed.append(buf), each
//      awaited (one signature per entry);
//  (c) feed A: one sequential warm-up pass of feed.get(i) over all entries (also
//      reported), then --gets feed.get(i) at uniformly random indices (fixed-seed
//      xorshift32), each awaited.
// Entries are 30 bytes: `entry-${i}` right-padded with '.'. Timings use
// process.hrtime.bigint(); the open (ready) and close of the feeds are not timed.
// Output: one JSON line. With --runs R > 1 the *_per_s fields are medians and the
// "runs" array holds every run.

const fs = require('fs')
const os = require('os')
const path = require('path')
const hypercore = require('hypercore')
const { call, ready, close, parsePositiveInt, runMain, usageError } = require('./lib/common')

const USAGE = 'usage: node bench-hypercore.js [--n N] [--single-n N2] [--gets G] [--batch B] [--runs R] [--dir BASE] [--keep]'
const ENTRY_BYTES = 30

function parseArgs (argv) {
  const o = { n: 100000, singleN: 20000, gets: 100000, batch: 1000, runs: 1, dir: os.tmpdir(), keep: false }
  const num = { '--n': 'n', '--single-n': 'singleN', '--gets': 'gets', '--batch': 'batch', '--runs': 'runs' }
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let v
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq) }
    if (num[a]) {
      if (v === undefined) v = argv[++i]
      o[num[a]] = parsePositiveInt(a, v, { allowZero: a === '--single-n' || a === '--gets' })
    } else if (a === '--dir') {
      o.dir = v !== undefined ? v : argv[++i]
      if (!o.dir) throw usageError('--dir needs a value')
    } else if (a === '--keep') {
      o.keep = true
    } else {
      throw usageError(`unknown argument ${a}`)
    }
  }
  return o
}

function entry (i) {
  const s = `entry-${i}`
  if (s.length > ENTRY_BYTES) throw new Error('index too large for a 30-byte entry')
  return Buffer.from(s.padEnd(ENTRY_BYTES, '.'), 'utf8')
}

function seconds (t0, t1) {
  return Number(t1 - t0) / 1e9
}

function rate (count, secs) {
  return secs > 0 ? Math.round(count / secs) : null
}

function dirBytes (dir) {
  let total = 0
  for (const f of fs.readdirSync(dir)) total += fs.statSync(path.join(dir, f)).size
  return total
}

function xorshift32 (seed) {
  let x = seed >>> 0 || 1
  return function () {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x
  }
}

async function openFeed (dir) {
  const feed = hypercore(dir, { valueEncoding: 'binary' })
  await ready(feed)
  return feed
}

async function runOnce (o, base) {
  const r = {}

  // (a) batched appends
  const dirA = path.join(base, 'feed-a')
  const a = await openFeed(dirA)
  let t0 = process.hrtime.bigint()
  for (let start = 0; start < o.n; start += o.batch) {
    const end = Math.min(o.n, start + o.batch)
    const bufs = []
    for (let i = start; i < end; i++) bufs.push(entry(i))
    await call(a, 'append', bufs)
  }
  let t1 = process.hrtime.bigint()
  r.append_batch_s = seconds(t0, t1)
  r.append_batch_per_s = rate(o.n, r.append_batch_s)

  // (b) single appends, one signature each
  if (o.singleN > 0) {
    const dirB = path.join(base, 'feed-b')
    const b = await openFeed(dirB)
    t0 = process.hrtime.bigint()
    for (let i = 0; i < o.singleN; i++) await call(b, 'append', entry(i))
    t1 = process.hrtime.bigint()
    r.append_single_s = seconds(t0, t1)
    r.append_single_per_s = rate(o.singleN, r.append_single_s)
    await close(b)
    r.feed_b_disk_bytes = dirBytes(dirB)
  }

  // (c) sequential warm-up pass, then random gets
  t0 = process.hrtime.bigint()
  for (let i = 0; i < o.n; i++) {
    const d = await call(a, 'get', i, { valueEncoding: 'binary', wait: false })
    if (d.length !== ENTRY_BYTES) throw new Error(`get ${i}: ${d.length} bytes`)
  }
  t1 = process.hrtime.bigint()
  r.seq_get_s = seconds(t0, t1)
  r.seq_get_per_s = rate(o.n, r.seq_get_s)

  if (o.gets > 0) {
    const rnd = xorshift32(0x9e3779b9)
    const idx = new Uint32Array(o.gets)
    for (let k = 0; k < o.gets; k++) idx[k] = rnd() % o.n
    t0 = process.hrtime.bigint()
    for (let k = 0; k < o.gets; k++) {
      const d = await call(a, 'get', idx[k], { valueEncoding: 'binary', wait: false })
      if (d.length !== ENTRY_BYTES) throw new Error(`get ${idx[k]}: ${d.length} bytes`)
    }
    t1 = process.hrtime.bigint()
    r.random_get_s = seconds(t0, t1)
    r.random_get_per_s = rate(o.gets, r.random_get_s)
  }

  r.feed_a_length = a.length
  r.feed_a_byte_length = a.byteLength
  await close(a)
  r.feed_a_disk_bytes = dirBytes(dirA)
  return r
}

function median (xs) {
  const s = xs.filter((x) => x !== null && x !== undefined).sort((p, q) => p - q)
  if (!s.length) return null
  const m = s.length >> 1
  return s.length % 2 ? s[m] : Math.round((s[m - 1] + s[m]) / 2)
}

async function main () {
  const o = parseArgs(process.argv.slice(2))
  fs.mkdirSync(o.dir, { recursive: true })
  const runs = []
  for (let k = 0; k < o.runs; k++) {
    const base = fs.mkdtempSync(path.join(o.dir, 'kappa-rs-bench-hypercore-'))
    try {
      runs.push(await runOnce(o, base))
    } finally {
      if (!o.keep) fs.rmSync(base, { recursive: true, force: true })
      else process.stderr.write(`kept ${base}\n`)
    }
  }
  const pick = (f) => median(runs.map((r) => r[f]))
  const out = {
    [`append_batch_${o.batch}_per_s`]: pick('append_batch_per_s'),
    append_single_per_s: o.singleN > 0 ? pick('append_single_per_s') : null,
    random_get_per_s: o.gets > 0 ? pick('random_get_per_s') : null,
    seq_get_per_s: pick('seq_get_per_s'),
    n: o.n,
    single_n: o.singleN,
    gets: o.gets,
    batch: o.batch,
    entry_bytes: ENTRY_BYTES,
    runs_count: o.runs,
    append_batch_s: runs[0].append_batch_s,
    append_single_s: runs[0].append_single_s,
    random_get_s: runs[0].random_get_s,
    feed_a_disk_bytes: runs[0].feed_a_disk_bytes,
    feed_b_disk_bytes: runs[0].feed_b_disk_bytes,
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    node: process.version,
    hypercore: require('hypercore/package.json').version,
    storage: 'random-access-file',
    tmp_base: o.dir
  }
  if (o.runs > 1) out.runs = runs
  process.stdout.write(JSON.stringify(out) + '\n')
}

runMain(USAGE, main)
