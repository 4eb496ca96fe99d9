#!/usr/bin/env node
'use strict'
// JS kappa-core 6 app with a kappa-view-kv 2.0.2 view (on memdb), replicating NON-live over
// one TCP connection. Counterpart for Rust kv-view interop tests.
//
// usage: node kv-peer.js --dir DIR (--listen PORT | --connect HOST:PORT) --initiator|--responder
//          [--shared-key HEX32] [--put KEY=VALUE ...] [--expect-keys N] [--no-local-writer]
//          [--timeout-ms MS]
//
// Storage: kappa(DIR, {valueEncoding: 'json'[, encryptionKey: Buffer(shared key)]}).
// View:    core.use('kv', kv(memdb(), mapFn)), the kappa-view-kv convention:
//            mapFn = (entry, next) => {
//              const v = entry.value
//              if (!v || typeof v.key !== 'string') return next()
//              next(null, [{ key: v.key, id: entry.key + '@' + entry.seq, links: v.links || [] }])
//            }
//          entry.key is the feed key as 64 lowercase hex chars (multifeed-index), entry.seq
//          the block index, so an id is "<feedkeyhex>@<seq>" (seq in decimal).
//          The view lives in memdb, so it is rebuilt from all feeds on every run.
// --put KEY=VALUE (repeatable, in order, split at the first '='): appends
//   {key: KEY, value: VALUE, links: [ids of the current heads of KEY]} to the writer 'local'
//   before replicating. VALUE is JSON.parse'd if that works, else kept as a string. Each put
//   waits for the view to index the previous one, so two puts of one key form a chain.
//   The writer 'local' is created at start-up even without --put (as kappa apps do), so
//   this peer never offers an empty feed list: multifeed 5.2.4 non-live sessions where one
//   side has 0 feeds fail ~15% of the time (the other side gets REPLICATE_FEEDS [] before
//   its own feed stream is set up and closes the root channel early). --no-local-writer
//   skips this (then --put is not allowed).
// Replication: non-live, pump(socket, core.replicate(isInitiator, {live: false}), socket).
//   --listen PORT (0 = any) prints {"event":"listening","port":P,...} and serves ONE
//   connection; --connect retries ECONNREFUSED every 100 ms until the deadline.
//   Success needs a clean stream end AND 'remote-feeds' (the multifeed exchange finished)
//   AND 'prefinalize' (a protocol Close arrived), as in multifeed-peer.js.
// Then the view is brought up to date (core.ready('kv') until every block of every feed is
// indexed) and the peer prints ONE line:
//   {"event":"done","table":{KEY:[{"id","value"}...]},"keys":K,"feeds":N,"puts":[{key,id}],
//    "openMs","putMs","replicateMs","viewMs","elapsedMs"}
//   table: every key found in any entry of any feed (same filter as mapFn), mapped to its
//   heads from core.api.kv.get(KEY), each {id, value: entry.value.value}, sorted by id
//   (plain JS string order). "puts": the ids of this run's own puts.
// --expect-keys N: fewer than N keys in the table -> {"event":"error",...,"table"}, exit 1.
// --timeout-ms MS (default 30000): {"event":"timeout",...}, exit 2.
// Any error: {"event":"error","message"[,"code"]}, exit 1.

const net = require('net')
const kappa = require('kappa-core')
const kv = require('kappa-view-kv')
const memdb = require('memdb')
const pump = require('pump')
const { call, parsePositiveInt, usageError, sleep, emit, dialWithRetry } = require('./lib/common')

const USAGE = 'usage: node kv-peer.js --dir DIR (--listen PORT | --connect HOST:PORT) --initiator|--responder ' +
  '[--shared-key HEX32] [--put KEY=VALUE ...] [--expect-keys N] [--no-local-writer] [--timeout-ms MS]'

const T0 = Date.now()
// ---------------------------------------------------------------- arguments

function parsePut (v) {
  const i = v.indexOf('=')
  if (i < 0) throw usageError(`--put needs KEY=VALUE, got ${JSON.stringify(v)}`)
  const raw = v.slice(i + 1)
  let value
  try {
    value = JSON.parse(raw)
  } catch (_) {
    value = raw
  }
  return { key: v.slice(0, i), value }
}

function parseArgs (argv) {
  const o = {
    dir: null,
    listen: null,
    connect: null,
    initiator: null,
    sharedKey: null,
    puts: [],
    expectKeys: null,
    localWriter: true,
    timeoutMs: 30000
  }
  const takesValue = new Set(['--dir', '--listen', '--connect', '--shared-key', '--put', '--expect-keys', '--timeout-ms'])
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let v
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1)
      a = a.slice(0, eq)
    } else if (takesValue.has(a)) {
      if (i + 1 >= argv.length) throw usageError(`${a} needs a value`)
      v = argv[++i]
    }
    if (takesValue.has(a) && v === undefined) throw usageError(`${a} needs a value`)
    switch (a) {
      case '--dir': o.dir = v; break
      case '--listen': o.listen = parsePositiveInt('--listen PORT', v, { allowZero: true }); break
      case '--connect': {
        const m = /^(.+):([0-9]+)$/.exec(v)
        if (!m) throw usageError(`--connect needs HOST:PORT, got ${JSON.stringify(v)}`)
        o.connect = { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: parsePositiveInt('--connect PORT', m[2]) }
        break
      }
      case '--initiator':
      case '--responder': {
        const want = a === '--initiator'
        if (o.initiator !== null && o.initiator !== want) throw usageError('give exactly one of --initiator / --responder')
        o.initiator = want
        break
      }
      case '--shared-key':
        if (!/^[0-9a-fA-F]{64}$/.test(v)) throw usageError('--shared-key must be 64 hex characters')
        o.sharedKey = Buffer.from(v, 'hex')
        break
      case '--put': o.puts.push(parsePut(v)); break
      case '--expect-keys': o.expectKeys = parsePositiveInt('--expect-keys N', v, { allowZero: true }); break
      case '--no-local-writer': o.localWriter = false; break
      case '--timeout-ms': o.timeoutMs = parsePositiveInt('--timeout-ms MS', v); break
      case '-h':
      case '--help':
        throw usageError('help requested')
      default:
        throw usageError(`unknown argument ${a}`)
    }
  }
  if (!o.dir) throw usageError('missing --dir DIR')
  if ((o.listen === null) === (o.connect === null)) throw usageError('give exactly one of --listen PORT / --connect HOST:PORT')
  if (o.initiator === null) throw usageError('give exactly one of --initiator / --responder')
  if (o.puts.length && !o.localWriter) throw usageError('--put needs the local writer (drop --no-local-writer)')
  return o
}

// ---------------------------------------------------------------- state

let opts = null
let core = null
let mf = null
let server = null
let socket = null
let stream = null
let shuttingDown = false
let sawRemoteFeeds = false
let sawClose = false
let sawNoise = false
const putIds = []
const timings = { openMs: null, putMs: null, replicateMs: null, viewMs: null }
let T_REPL = null

function teardownNetwork () {
  if (server) { try { server.close() } catch (_) {} }
  if (stream) { try { stream.destroy() } catch (_) {} }
  if (socket) { try { socket.destroy() } catch (_) {} }
}

// Single exit path. kind: 'done' | 'timeout' | 'error'.
async function shutdown (code, kind, extra) {
  if (shuttingDown) return
  shuttingDown = true
  if (T_REPL !== null && timings.replicateMs === null) timings.replicateMs = Date.now() - T_REPL
  setTimeout(() => {
    emit(Object.assign({ event: kind }, extra, { elapsedMs: Date.now() - T0, note: 'forced exit during shutdown' }))
    process.exit(code)
  }, 5000).unref()
  teardownNetwork()
  const line = Object.assign({ event: kind }, extra, timings, { elapsedMs: Date.now() - T0 })
  if (mf && !mf.closed) {
    try { await Promise.race([call(mf, 'close'), sleep(3000)]) } catch (_) {}
  }
  emit(line)
  process.exit(code)
}

function fail (err, extra) {
  const message = err && err.message ? err.message : String(err)
  if (process.env.INTEROP_DEBUG && err && err.stack) process.stderr.write(err.stack + '\n')
  shutdown(1, 'error', Object.assign({ message, code: err && typeof err.code === 'string' ? err.code : undefined }, extra))
}

// ---------------------------------------------------------------- kappa + view

function mapFn (entry, next) {
  const v = entry.value
  if (!v || typeof v.key !== 'string') return next()
  next(null, [{ key: v.key, id: entry.key + '@' + entry.seq, links: v.links || [] }])
}

// core.ready('kv') can call back before a just-downloaded/just-created feed has been picked
// up by the indexer (multifeed-index attaches its 'append'/'download' listeners in
// feed.ready). So also require that the indexer's per-feed positions cover every block.
async function viewCaughtUp () {
  const idx = core._indexes.kv
  for (;;) {
    if (shuttingDown) throw new Error('shutting down')
    await new Promise((resolve) => core.ready('kv', resolve))
    const feeds = mf.feeds()
    const at = idx._at || {}
    const behind = feeds.some((f) => {
      const a = at[f.key.toString('hex')]
      return (a ? a.max : 0) < f.length
    })
    if (!behind) return
    await sleep(10)
  }
}

// heads of KEY: [{key: feedhex, seq, value}] from kappa-view-kv's get (cb(err) with
// err.notFound for an unknown key).
function kvGet (key) {
  return new Promise((resolve, reject) => {
    core.api.kv.get(key, (err, res) => {
      if (err && (err.notFound || err.type === 'NotFoundError')) return resolve([])
      if (err) return reject(err)
      resolve(res)
    })
  })
}

const idOf = (h) => h.key + '@' + h.seq

async function openCore (o) {
  const kopts = { valueEncoding: 'json' }
  if (o.sharedKey) kopts.encryptionKey = o.sharedKey
  core = kappa(o.dir, kopts)
  mf = core._logs
  core.on('error', fail) // view (multifeed-index) errors
  mf.on('error', fail)
  core.use('kv', kv(memdb(), mapFn))
  await call(core, 'ready')
  await viewCaughtUp()
  timings.openMs = Date.now() - T0

  const t = Date.now()
  // Like a typical kappa app, create the writer 'local' at start-up even without --put. An
  // empty multifeed (0 feeds) in a NON-live session races in multifeed 5.2.4 (see README).
  if (o.localWriter) {
    const w = await call(core, 'writer', 'local')
    for (const { key, value } of o.puts) {
      const links = (await kvGet(key)).map(idOf).sort()
      const seq = w.length
      await call(w, 'append', { key, value, links })
      putIds.push({ key, id: w.key.toString('hex') + '@' + seq, links })
      await viewCaughtUp()
    }
  }
  timings.putMs = Date.now() - t
}

async function buildTable () {
  const keys = new Set()
  for (const feed of mf.feeds()) {
    for (let i = 0; i < feed.length; i++) {
      if (!feed.has(i)) continue
      const v = await call(feed, 'get', i, { wait: false })
      if (v && typeof v.key === 'string') keys.add(v.key)
    }
  }
  const table = {}
  for (const key of [...keys].sort()) {
    const heads = await kvGet(key)
    table[key] = heads
      .map((h) => ({ id: idOf(h), value: h.value ? h.value.value : undefined }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }
  return table
}

async function finish () {
  T_REPL_END()
  const t = Date.now()
  await viewCaughtUp()
  timings.viewMs = Date.now() - t
  const table = await buildTable()
  const nkeys = Object.keys(table).length
  const extra = { table, keys: nkeys, feeds: mf.feeds().length, puts: putIds }
  if (opts.expectKeys !== null && nkeys < opts.expectKeys) {
    return fail(new Error(`expected at least ${opts.expectKeys} keys, got ${nkeys}`), extra)
  }
  shutdown(0, 'done', extra)
}

// ---------------------------------------------------------------- replication

function T_REPL_END () {
  if (T_REPL !== null && timings.replicateMs === null) timings.replicateMs = Date.now() - T_REPL
}

function replicateOver (sock) {
  T_REPL = Date.now()
  socket = sock
  sock.setNoDelay(true)
  stream = core.replicate(opts.initiator, { live: false })
  stream.on('remote-feeds', () => { sawRemoteFeeds = true })
  stream.on('prefinalize', () => { sawClose = true })
  stream.on('handshake', () => { sawNoise = true })
  pump(sock, stream, sock, (err) => {
    if (shuttingDown) return
    T_REPL_END()
    if (err) return fail(err)
    // hypercore-protocol 7 ends its readable side on any clean TCP end, so also require the
    // multifeed exchange and a protocol Close.
    if (!sawRemoteFeeds) {
      return fail(new Error(`connection ended before the multifeed exchange finished (noise handshake ${sawNoise ? 'done' : 'not done'}, no REPLICATE_FEEDS received)`))
    }
    if (!sawClose) return fail(new Error('connection ended without a Close message'))
    finish().catch(fail)
  })
}

function listen (port) {
  server = net.createServer()
  let accepted = false
  server.on('connection', (sock) => {
    if (accepted || shuttingDown) {
      sock.destroy()
      return
    }
    accepted = true
    server.close()
    replicateOver(sock)
  })
  server.on('error', fail)
  server.listen(port, '127.0.0.1', () => {
    emit({
      event: 'listening',
      port: server.address().port,
      feeds: mf.feeds().length,
      puts: putIds,
      openMs: timings.openMs,
      putMs: timings.putMs,
      elapsedMs: Date.now() - T0
    })
  })
}

function connect ({ host, port }) {
  dialWithRetry({ host, port }, { stopped: () => shuttingDown, onConnect: replicateOver, onError: (err) => fail(err) })
}

// ---------------------------------------------------------------- main

async function main () {
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (err.usage) process.stderr.write(USAGE + '\n')
    emit({ event: 'error', message: err.message })
    process.exit(1)
  }
  setTimeout(() => shutdown(2, 'timeout', {}), opts.timeoutMs)
  await openCore(opts)
  if (shuttingDown) return
  if (opts.listen !== null) listen(opts.listen)
  else connect(opts.connect)
}

process.on('uncaughtException', (err) => fail(err))
process.on('unhandledRejection', (err) => fail(err))
process.stdout.on('error', () => {})
main().catch((err) => fail(err))
