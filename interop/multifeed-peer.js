#!/usr/bin/env node
'use strict'
// JS kappa-core 6 (multifeed 5.2.4 / hypercore 8 / hypercore-protocol 7) replication peer
// over TCP (loopback), for testing the Rust multifeed replication against the real thing.
//
// usage: node multifeed-peer.js --dir DIR (--listen PORT | --connect HOST:PORT)
//          (--initiator | --responder) [--live] [--shared-key HEX32]
//          [--write NAME:N ...] [--write-during-live NAME:N]
//          [--expect-feeds K] [--expect-total T] [--await-acks] [--timeout-ms MS]
//
// Storage: kappa(DIR, {valueEncoding: 'json'[, encryptionKey: Buffer(shared key)]}).
//   kappa-core 6 hands these opts unchanged to multifeed(DIR, opts), which hands them
//   to every hypercore. Without --shared-key multifeed uses its default shared key
//   bee80ff3a4ee5e727dc44197cb9d25bf8f19d50b0f3ad2984cfe5b7d14e75de7.
//   --write NAME:N (repeatable, in order) gets/creates the local writer NAME and appends
//   N entries {"n": i, "who": NAME} in ONE append([...]) call, i = old length .. old
//   length+N-1 (0..N-1 on a new writer). Done before listening/connecting.
//
// Network: --listen PORT listens on 127.0.0.1:PORT (0 = any), prints
//   {"event":"listening","port":P,"feeds":[report],...} and serves exactly ONE connection.
//   --connect HOST:PORT dials (ECONNREFUSED is retried every 100 ms until the deadline).
//   --initiator/--responder is the protocol role, independent of who listens.
//   Replication: pump(socket, core.replicate(isInitiator, {live}), socket).
//
// Termination (every path ends in process.exit):
//   non-live: the replication stream ends cleanly (pump callback without error) AND the
//     multifeed exchange finished (stream 'remote-feeds') AND a protocol Close was
//     received (stream 'prefinalize'): print done, exit 0. A bare TCP end (which also
//     ends a hypercore-protocol 7 stream cleanly) is an error. --expect-feeds /
//     --expect-total, if given, are checked at the end (error if not met).
//   live: --write-during-live NAME:N: 500 ms after the TCP connection is established,
//     get/create writer NAME and append N entries one at a time, 10 ms apart, then print
//     {"event":"live-written",...}. --expect-feeds K / --expect-total T: once
//     feeds >= K, sum of lengths >= T and every feed has all blocks
//     (feed.downloaded(0, length) === length), print done ("closedBy":"local"), exit 0.
//     --await-acks: every feed replicates with hypercore's {ack: true} (so the remote
//     is asked to ack each block it stores from us), and "expectations met" also
//     needs as many acks as our writable feeds have blocks (the remote holds what
//     we wrote before we hang up).
//     Without expectations: wait for the remote to close (done, "closedBy":"remote",
//     exit 0). The remote closing before the multifeed exchange finished (no
//     REPLICATE_FEEDS received), before the expectations are met or before the live
//     writes are done is an error. ECONNRESET/EPIPE/"premature close" count as the
//     remote closing.
//   A shared-key mismatch fails with "Exchange key did not match remote" on the side
//   that receives the remote's root Open; the other side (always the responder sees
//   the remote Open; the initiator only ~half the time) may instead just see the
//   connection end: "connection ended (end) before the multifeed exchange finished ...".
//   --timeout-ms MS (default 30000): {"event":"timeout",...report}, exit 2.
//   any error (bad shared key, version/client mismatch, stream/feed error, usage):
//     {"event":"error","message":...}, exit 1.
//
// done/timeout line: {"event", "feeds":[{key, length, byteLength, downloaded, digest,
//   localname, writable}], "feedCount", "totalLength", "complete", "closedBy",
//   "openMs", "writeMs", "replicateMs", "elapsedMs"}
//   feeds are sorted by key (hex). digest = lib/common ContentDigest over the raw bytes
//   (feed.get(i, {valueEncoding: 'binary'})) of blocks 0..length-1 in order; missing
//   blocks are skipped and `downloaded` counts the present ones (complete == every feed
//   has downloaded === length). localname = content of DIR/<n>/localname for the folder
//   whose DIR/<n>/key is that key, else null. replicateMs = from the start of
//   replication on the connected socket to its end (done/expectations met).
//   The stream is destroyed and the multifeed closed BEFORE the line is printed.

const net = require('net')
const kappa = require('kappa-core')
const pump = require('pump')
const {
  call, parsePositiveInt, usageError, sleep, emit, parseNameN, isTransportClose, feedReport, dialWithRetry
} = require('./lib/common')

const USAGE = 'usage: node multifeed-peer.js --dir DIR (--listen PORT | --connect HOST:PORT) ' +
  '--initiator|--responder [--live] [--shared-key HEX32] [--write NAME:N ...] ' +
  '[--write-during-live NAME:N] [--expect-feeds K] [--expect-total T] [--timeout-ms MS]'

const T0 = Date.now()
let T_REPL = null
let T_REPL_END = null
// ---------------------------------------------------------------- arguments

function parseArgs (argv) {
  const o = {
    dir: null,
    listen: null,
    connect: null,
    initiator: null,
    live: false,
    sharedKey: null,
    writes: [],
    writeDuringLive: null,
    expectFeeds: null,
    expectTotal: null,
    awaitAcks: false,
    timeoutMs: 30000
  }
  const takesValue = new Set(['--dir', '--listen', '--connect', '--shared-key', '--write', '--write-during-live',
    '--expect-feeds', '--expect-total', '--timeout-ms'])
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
      case '--live': o.live = true; break
      case '--await-acks': o.awaitAcks = true; break
      case '--shared-key':
        if (!/^[0-9a-fA-F]{64}$/.test(v)) throw usageError('--shared-key must be 64 hex characters')
        o.sharedKey = Buffer.from(v, 'hex')
        break
      case '--write': o.writes.push(parseNameN('--write', v)); break
      case '--write-during-live': o.writeDuringLive = parseNameN('--write-during-live', v); break
      case '--expect-feeds': o.expectFeeds = parsePositiveInt('--expect-feeds K', v, { allowZero: true }); break
      case '--expect-total': o.expectTotal = parsePositiveInt('--expect-total T', v, { allowZero: true }); break
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
  if (o.writeDuringLive && !o.live) throw usageError('--write-during-live needs --live')
  return o
}

// ---------------------------------------------------------------- state

let opts = null
let core = null
let mf = null // core._logs (the multifeed)
let acks = 0 // Haves marked ack received (--await-acks)
let server = null
let socket = null
let stream = null
let shuttingDown = false
let liveWritesDone = false
let sawRemoteFeeds = false // stream 'remote-feeds': our request was answered (REPLICATE_FEEDS)
let sawClose = false // stream 'prefinalize': a protocol Close for a known channel arrived
let sawNoise = false // stream 'handshake': the Noise handshake completed
const timings = { openMs: null, writeMs: null }

// key hex -> localname (null if none), from DIR/<n>/key + DIR/<n>/localname
function expectationsMet () {
  const feeds = mf.feeds()
  if (opts.expectFeeds !== null && feeds.length < opts.expectFeeds) return false
  let total = 0
  for (const f of feeds) {
    if (!f.opened) return false
    if (f.downloaded(0, f.length) !== f.length) return false
    total += f.length
  }
  if (opts.expectTotal !== null && total < opts.expectTotal) return false
  if (opts.awaitAcks) {
    const ours = feeds.filter((f) => f.writable).reduce((n, f) => n + f.length, 0)
    if (acks < ours) return false
  }
  return true
}

function expectationState () {
  if (!mf || mf.closed) return null
  const feeds = mf.feeds()
  let total = 0
  let downloaded = 0
  for (const f of feeds) {
    total += f.length
    downloaded += f.length ? f.downloaded(0, f.length) : 0
  }
  return `feeds ${feeds.length}/${opts.expectFeeds}, total length ${total}/${opts.expectTotal}, downloaded ${downloaded}`
}

const hasExpectations = () => opts.expectFeeds !== null || opts.expectTotal !== null

function checkExpect () {
  if (shuttingDown || !opts.live || !hasExpectations() || T_REPL === null) return
  if (expectationsMet()) shutdown(0, 'done', { closedBy: 'local' })
}

function teardownNetwork () {
  if (server) { try { server.close() } catch (_) {} }
  if (stream) { try { stream.destroy() } catch (_) {} }
  if (socket) { try { socket.destroy() } catch (_) {} }
}

// Single exit path. kind: 'done' | 'timeout' | 'error'.
async function shutdown (code, kind, extra) {
  if (shuttingDown) return
  shuttingDown = true
  if (T_REPL !== null && T_REPL_END === null) T_REPL_END = Date.now()
  // Hard stop in case anything below hangs.
  setTimeout(() => {
    const replicateMs = T_REPL === null ? null : T_REPL_END - T_REPL
    emit(Object.assign({ event: kind }, extra, { elapsedMs: Date.now() - T0, replicateMs, note: 'forced exit during shutdown' }))
    process.exit(code)
  }, 5000).unref()

  teardownNetwork()
  const line = { event: kind }
  if (kind === 'error') {
    line.message = extra.message
    if (extra.code) line.code = extra.code
  } else {
    try {
      Object.assign(line, await feedReport(mf, opts.dir))
    } catch (err) {
      line.reportError = err.message
    }
    Object.assign(line, extra)
  }
  line.openMs = timings.openMs
  line.writeMs = timings.writeMs
  // From the start of replication on the connected socket to its end (for benchmarks:
  // excludes node start-up, storage open, local writes and closing).
  line.replicateMs = T_REPL === null ? null : T_REPL_END - T_REPL
  line.elapsedMs = Date.now() - T0
  if (mf && !mf.closed) {
    try { await Promise.race([call(mf, 'close'), sleep(3000)]) } catch (_) {}
  }
  emit(line)
  process.exit(code)
}

function fail (err) {
  const message = err && err.message ? err.message : String(err)
  if (process.env.INTEROP_DEBUG && err && err.stack) process.stderr.write(err.stack + '\n')
  shutdown(1, 'error', { message, code: err && typeof err.code === 'string' ? err.code : undefined })
}

// ---------------------------------------------------------------- storage

function watchFeed (feed) {
  if (opts.awaitAcks) {
    // multifeed does not pass replication options through: add ack here.
    const replicate = feed.replicate.bind(feed)
    feed.replicate = (initiator, o) => replicate(initiator, Object.assign({}, o, { ack: true }))
  }
  if (!opts.live || !hasExpectations()) return
  const check = () => setImmediate(checkExpect)
  feed.on('download', check)
  feed.on('append', check)
  feed.on('sync', check)
}

async function openCore (o) {
  const kopts = { valueEncoding: 'json' }
  if (o.sharedKey) kopts.encryptionKey = o.sharedKey
  core = kappa(o.dir, kopts)
  mf = core._logs
  core.on('error', fail) // kappa-core only re-emits view errors (none here)
  mf.on('error', fail) // multifeed: load errors, writer feed errors
  mf.on('feed', (feed) => watchFeed(feed)) // also fires for feeds loaded at start-up
  await call(core, 'ready')
  timings.openMs = Date.now() - T0

  const t = Date.now()
  for (const { name, n } of o.writes) {
    const w = await call(core, 'writer', name)
    const start = w.length
    const batch = []
    for (let i = start; i < start + n; i++) batch.push({ n: i, who: name })
    if (batch.length) await call(w, 'append', batch)
  }
  timings.writeMs = Date.now() - t
}

async function writeDuringLive ({ name, n }) {
  const w = await call(core, 'writer', name)
  const start = w.length
  for (let i = start; i < start + n; i++) {
    if (shuttingDown) return
    await call(w, 'append', { n: i, who: name })
    if (i + 1 < start + n) await sleep(10)
  }
  liveWritesDone = true
  if (!shuttingDown) {
    emit({ event: 'live-written', name, key: w.key.toString('hex'), count: n, length: w.length, elapsedMs: Date.now() - T0 })
  }
}

// ---------------------------------------------------------------- replication

// The remote rejecting us (e.g. a different shared key: the side that detects it destroys
// the stream, often before its own root Open went out) looks like a bare TCP end here.
function noExchangeError (err) {
  return new Error(`connection ended (${err ? err.message : 'end'}) before the multifeed exchange finished ` +
    `(noise handshake ${sawNoise ? 'done' : 'not done'}, no REPLICATE_FEEDS received)`)
}

function replicateOver (sock) {
  T_REPL = Date.now()
  socket = sock
  sock.setNoDelay(true)
  stream = core.replicate(opts.initiator, { live: opts.live })
  stream.on('remote-feeds', () => {
    sawRemoteFeeds = true
    setImmediate(checkExpect)
  })
  stream.on('prefinalize', () => { sawClose = true })
  stream.on('handshake', () => { sawNoise = true })
  stream.on('ack', () => {
    acks += 1
    setImmediate(checkExpect)
  })

  if (opts.writeDuringLive) {
    setTimeout(() => {
      if (!shuttingDown) writeDuringLive(opts.writeDuringLive).catch(fail)
    }, 500)
  }
  if (opts.live && hasExpectations()) {
    // Safety net besides the feed events (e.g. a length learnt from a Have only).
    setInterval(checkExpect, 100)
  }

  pump(sock, stream, sock, (err) => {
    if (shuttingDown) return
    T_REPL_END = Date.now()
    if (!opts.live) {
      if (err) return fail(err)
      // hypercore-protocol 7 ends its readable side on *any* clean TCP end ('finish' ->
      // push(null)), so a clean pump end alone does not prove a proper replication end.
      if (!sawRemoteFeeds) return fail(noExchangeError())
      if (!sawClose) return fail(new Error('connection ended without a Close message'))
      if (hasExpectations() && !expectationsMet()) {
        return fail(new Error(`replication ended before the expectations were met (${expectationState()})`))
      }
      return shutdown(0, 'done', { closedBy: 'stream-end' })
    }
    // live: the stream only ends when the remote closes the connection (or on error)
    if (err && !isTransportClose(err)) return fail(err)
    if (!sawRemoteFeeds) return fail(noExchangeError(err))
    if (hasExpectations() && !expectationsMet()) {
      return fail(new Error(`remote closed the connection (${err ? err.message : 'end'}) before the expectations were met (${expectationState()})`))
    }
    if (opts.writeDuringLive && !liveWritesDone) {
      return fail(new Error('remote closed the connection before the live writes were done'))
    }
    shutdown(0, 'done', { closedBy: 'remote' })
  })
}

function listen (port, listenReport) {
  server = net.createServer()
  let accepted = false
  server.on('connection', (sock) => {
    if (accepted || shuttingDown) {
      sock.destroy()
      return
    }
    accepted = true
    server.close() // exactly one connection
    replicateOver(sock)
  })
  server.on('error', fail)
  server.listen(port, '127.0.0.1', () => {
    emit(Object.assign({
      event: 'listening',
      port: server.address().port
    }, listenReport, {
      openMs: timings.openMs,
      writeMs: timings.writeMs,
      elapsedMs: Date.now() - T0
    }))
  })
}

function connect ({ host, port }) {
  dialWithRetry({ host, port }, { stopped: () => shuttingDown, onConnect: replicateOver, onError: fail })
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

  setTimeout(() => shutdown(2, 'timeout', hasExpectations() ? { waitingFor: expectationState() } : {}), opts.timeoutMs)

  await openCore(opts)
  if (shuttingDown) return
  if (opts.listen !== null) listen(opts.listen, await feedReport(mf, opts.dir))
  else connect(opts.connect)
}

process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)
process.stdout.on('error', () => {})
main().catch(fail)
