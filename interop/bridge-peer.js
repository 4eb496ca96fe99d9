#!/usr/bin/env node
'use strict'
// JS kappa-core 6 (multifeed 5.2.4) peer that sits in the MIDDLE of a chain A <-> BRIDGE <-> C.
// One kappa-core storage, two live replication sessions at the same time:
//   - it listens on 127.0.0.1:PORT and serves exactly ONE connection as the *responder*;
//   - it dials HOST:PORT (ECONNREFUSED retried every 100 ms) as the *initiator*.
// multifeed offers a feed that it learns on one session to every other open session
// (Multifeed._forwardLiveFeedAnnouncements), and hypercore forwards downloaded blocks to all
// peers of a feed (Have), so feeds and entries flow A -> C and C -> A through the bridge.
//
// usage: node bridge-peer.js --dir DIR --listen PORT --connect HOST:PORT [--shared-key HEX32]
//          [--write NAME:N ...] [--expect-feeds K] [--expect-total T] [--close-when-synced]
//          [--timeout-ms MS]
//
// Storage: kappa(DIR, {valueEncoding: 'json'[, encryptionKey: Buffer(shared key)]}), as in
//   multifeed-peer.js. --write NAME:N (optional, repeatable) appends N entries
//   {"n": i, "who": NAME} to the local writer NAME in one append([...]) before listening.
// Roles are fixed: the accepted connection is the Noise *responder*, the dialled one the
//   *initiator* (so the far end that connects to us must be --initiator and the far end we
//   dial must be --responder). Both run core.replicate(isInitiator, {live: true}).
//
// Output (one JSON line per event on stdout; every path ends in process.exit):
//   {"event":"listening","port":P,...}                  always the first line
//   {"event":"connected","side":"listen"|"dial","role":"responder"|"initiator",...}
//   {"event":"peer-closed","side",...}                  the remote ended that session
//   {"event":"local-closed","side","reason":"synced"}   --close-when-synced (see below)
//   {"event":"done",feeds:[{key,length,byteLength,downloaded,digest,localname,writable}],
//     feedCount,totalLength,complete,connections,...}
//       with --expect-feeds/--expect-total: as soon as the storage has >= K feeds whose
//       lengths sum to >= T and every feed is fully downloaded. The bridge then STAYS UP.
//       Without expectations: when both sessions have been closed by the peers.
//   {"event":"closed","closedBy":"remote"|"local"|"mixed"|"timeout",...report,connections}
//       then exit 0: both sessions are over after done (or the timeout hit after done).
// --close-when-synced (needs expectations): after done, the bridge itself closes a session
//   once every block of every feed in its storage was downloaded from, or uploaded to, that
//   peer during this session (tracked with the hypercore 'download'/'upload' events and their
//   peer argument). This lets a far end that waits for the remote to close (multifeed-peer.js
//   without --expect-*) finish without waiting for the timeout. Blocks that the peer already
//   had before this session are never counted, so with pre-shared data this falls back to
//   the peer closing / the timeout.
// Failures:
//   --timeout-ms MS (default 30000) before done: {"event":"timeout",waitingFor,...report}, exit 2.
//   any error: {"event":"error","message"[,"code"][,"side"]}, exit 1. Includes: a session
//   ending before the multifeed exchange finished (e.g. shared-key mismatch), a non-transport
//   stream error, both sessions closed before the expectations were met.

const net = require('net')
const kappa = require('kappa-core')
const pump = require('pump')
const {
  call, parsePositiveInt, usageError, sleep, emit, parseNameN, isTransportClose, feedReport, dialWithRetry
} = require('./lib/common')

const USAGE = 'usage: node bridge-peer.js --dir DIR --listen PORT --connect HOST:PORT [--shared-key HEX32] ' +
  '[--write NAME:N ...] [--expect-feeds K] [--expect-total T] [--close-when-synced] [--timeout-ms MS]'

const T0 = Date.now()
// ---------------------------------------------------------------- arguments

function parseArgs (argv) {
  const o = {
    dir: null,
    listen: null,
    connect: null,
    sharedKey: null,
    writes: [],
    expectFeeds: null,
    expectTotal: null,
    closeWhenSynced: false,
    timeoutMs: 30000
  }
  const takesValue = new Set(['--dir', '--listen', '--connect', '--shared-key', '--write',
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
      case '--shared-key':
        if (!/^[0-9a-fA-F]{64}$/.test(v)) throw usageError('--shared-key must be 64 hex characters')
        o.sharedKey = Buffer.from(v, 'hex')
        break
      case '--write': o.writes.push(parseNameN('--write', v)); break
      case '--expect-feeds': o.expectFeeds = parsePositiveInt('--expect-feeds K', v, { allowZero: true }); break
      case '--expect-total': o.expectTotal = parsePositiveInt('--expect-total T', v, { allowZero: true }); break
      case '--close-when-synced': o.closeWhenSynced = true; break
      case '--timeout-ms': o.timeoutMs = parsePositiveInt('--timeout-ms MS', v); break
      case '-h':
      case '--help':
        throw usageError('help requested')
      default:
        throw usageError(`unknown argument ${a}`)
    }
  }
  if (!o.dir) throw usageError('missing --dir DIR')
  if (o.listen === null) throw usageError('missing --listen PORT')
  if (o.connect === null) throw usageError('missing --connect HOST:PORT')
  if (o.closeWhenSynced && o.expectFeeds === null && o.expectTotal === null) {
    throw usageError('--close-when-synced needs --expect-feeds and/or --expect-total')
  }
  return o
}

// ---------------------------------------------------------------- state

let opts = null
let core = null
let mf = null
let server = null
let shuttingDown = false
let doneEmitted = false
let checkTimer = null
let syncTimer = null
const timings = { openMs: null, writeMs: null, doneMs: null }

function newConn (side, initiator) {
  return {
    side,
    initiator,
    socket: null,
    stream: null,
    connected: false,
    sawNoise: false,
    sawRemoteFeeds: false,
    closed: false,
    closedBy: null, // 'remote' | 'local'
    closeReason: null,
    blocks: new Map(), // feed key hex -> Set of block indices downloaded from / uploaded to this peer
    connectedMs: null,
    closedMs: null
  }
}
const conns = { listen: newConn('listen', false), dial: newConn('dial', true) }

function connState (c) {
  return {
    role: c.initiator ? 'initiator' : 'responder',
    connected: c.connected,
    exchanged: c.sawRemoteFeeds,
    closed: c.closed,
    closedBy: c.closedBy,
    closeReason: c.closeReason,
    connectedMs: c.connectedMs,
    closedMs: c.closedMs
  }
}

// key hex -> localname (null if none), from DIR/<n>/key + DIR/<n>/localname
const hasExpectations = () => opts.expectFeeds !== null || opts.expectTotal !== null

function expectationsMet () {
  if (!mf || mf.closed) return false
  const feeds = mf.feeds()
  if (opts.expectFeeds !== null && feeds.length < opts.expectFeeds) return false
  let total = 0
  for (const f of feeds) {
    if (!f.opened) return false
    if (f.downloaded(0, f.length) !== f.length) return false
    total += f.length
  }
  if (opts.expectTotal !== null && total < opts.expectTotal) return false
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

let emittingDone = false
async function emitDone () {
  if (doneEmitted || emittingDone || shuttingDown) return
  emittingDone = true
  let line
  try {
    line = Object.assign({ event: 'done' }, await feedReport(mf, opts.dir))
  } catch (err) {
    line = { event: 'done', reportError: err.message }
  }
  if (shuttingDown) return
  timings.doneMs = Date.now() - T0
  line.connections = { listen: connState(conns.listen), dial: connState(conns.dial) }
  line.openMs = timings.openMs
  line.writeMs = timings.writeMs
  line.elapsedMs = timings.doneMs
  doneEmitted = true
  emit(line)
  if (opts.closeWhenSynced) {
    checkSynced()
    if (!syncTimer) syncTimer = setInterval(checkSynced, 100) // safety net besides block events
  }
  maybeFinish()
}

function checkExpect () {
  if (shuttingDown || doneEmitted || !hasExpectations()) return
  if (expectationsMet()) emitDone().catch(fail)
}

// --close-when-synced: which session a hypercore Peer belongs to (peer.stream is the
// channel, peer.stream.stream the hypercore-protocol stream returned by core.replicate).
function connOfPeer (peer) {
  if (!peer || !peer.stream) return null
  for (const c of Object.values(conns)) {
    if (c.stream && peer.stream.stream === c.stream) return c
  }
  return null
}

function markBlock (feed, index, peer) {
  const c = connOfPeer(peer)
  if (!c) return
  const key = feed.key.toString('hex')
  let set = c.blocks.get(key)
  if (!set) c.blocks.set(key, (set = new Set()))
  set.add(index)
  if (doneEmitted) setImmediate(checkSynced)
}

// A session is "synced" when every block of every feed in storage was either downloaded
// from that peer or uploaded to it during this session: then the peer has everything.
function peerSynced (c) {
  for (const f of mf.feeds()) {
    if (!f.length) continue
    const set = c.blocks.get(f.key.toString('hex'))
    if (!set || set.size < f.length) return false
  }
  return true
}

function checkSynced () {
  if (shuttingDown || !doneEmitted || !opts.closeWhenSynced || !mf || mf.closed) return
  for (const c of Object.values(conns)) {
    if (!c.connected || c.closed || !c.sawRemoteFeeds || !peerSynced(c)) continue
    c.closed = true
    c.closedBy = 'local'
    c.closedMs = Date.now() - T0
    c.closeReason = 'synced'
    emit({ event: 'local-closed', side: c.side, reason: 'synced', elapsedMs: c.closedMs })
    try { c.stream.destroy() } catch (_) {}
    try { c.socket.destroy() } catch (_) {}
  }
  maybeFinish()
}

// Both sessions are over: finish (exit 0) or fail.
function maybeFinish () {
  if (shuttingDown) return
  if (!conns.listen.closed || !conns.dial.closed) return
  if (!doneEmitted) {
    if (hasExpectations() && !expectationsMet()) {
      return fail(new Error(`both connections closed before the expectations were met (${expectationState()})`))
    }
    // No expectations (or they became true just now): report, then finish.
    return emitDone().catch(fail)
  }
  const by = [conns.listen.closedBy, conns.dial.closedBy]
  shutdown(0, 'closed', { closedBy: by.every((b) => b === 'remote') ? 'remote' : by.every((b) => b === 'local') ? 'local' : 'mixed' })
}

function teardownNetwork () {
  if (server) { try { server.close() } catch (_) {} }
  for (const c of Object.values(conns)) {
    if (c.stream) { try { c.stream.destroy() } catch (_) {} }
    if (c.socket) { try { c.socket.destroy() } catch (_) {} }
  }
}

// Single exit path. kind: 'closed' | 'timeout' | 'error'.
async function shutdown (code, kind, extra) {
  if (shuttingDown) return
  shuttingDown = true
  if (checkTimer) clearInterval(checkTimer)
  if (syncTimer) clearInterval(syncTimer)
  setTimeout(() => {
    emit(Object.assign({ event: kind }, extra, { elapsedMs: Date.now() - T0, note: 'forced exit during shutdown' }))
    process.exit(code)
  }, 5000).unref()

  teardownNetwork()
  const line = { event: kind }
  if (kind === 'error') {
    line.message = extra.message
    if (extra.code) line.code = extra.code
    if (extra.side) line.side = extra.side
  } else {
    try {
      Object.assign(line, await feedReport(mf, opts.dir))
    } catch (err) {
      line.reportError = err.message
    }
    Object.assign(line, extra)
  }
  line.connections = { listen: connState(conns.listen), dial: connState(conns.dial) }
  line.openMs = timings.openMs
  line.writeMs = timings.writeMs
  line.doneMs = timings.doneMs
  line.elapsedMs = Date.now() - T0
  if (mf && !mf.closed) {
    try { await Promise.race([call(mf, 'close'), sleep(3000)]) } catch (_) {}
  }
  emit(line)
  process.exit(code)
}

function fail (err, side) {
  const message = err && err.message ? err.message : String(err)
  if (process.env.INTEROP_DEBUG && err && err.stack) process.stderr.write(err.stack + '\n')
  shutdown(1, 'error', { message, code: err && typeof err.code === 'string' ? err.code : undefined, side })
}

function onTimeout () {
  if (doneEmitted) return shutdown(0, 'closed', { closedBy: 'timeout' })
  shutdown(2, 'timeout', hasExpectations() ? { waitingFor: expectationState() } : {})
}

// ---------------------------------------------------------------- storage

function watchFeed (feed) {
  if (opts.closeWhenSynced) {
    feed.on('download', (index, data, from) => markBlock(feed, index, from))
    feed.on('upload', (index, data, peer) => markBlock(feed, index, peer))
  }
  if (!hasExpectations()) return
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
  core.on('error', (err) => fail(err))
  mf.on('error', (err) => fail(err))
  mf.on('feed', (feed) => watchFeed(feed))
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

// ---------------------------------------------------------------- replication

function replicateOver (c, sock) {
  c.socket = sock
  c.connected = true
  c.connectedMs = Date.now() - T0
  sock.setNoDelay(true)
  emit({ event: 'connected', side: c.side, role: c.initiator ? 'initiator' : 'responder', elapsedMs: c.connectedMs })
  const stream = c.stream = core.replicate(c.initiator, { live: true })
  stream.on('remote-feeds', () => {
    c.sawRemoteFeeds = true
    setImmediate(checkExpect)
  })
  stream.on('handshake', () => { c.sawNoise = true })
  pump(sock, stream, sock, (err) => {
    if (shuttingDown || c.closedBy === 'local') return
    c.closed = true
    c.closedBy = 'remote'
    c.closedMs = Date.now() - T0
    c.closeReason = err ? err.message : 'end'
    if (err && !isTransportClose(err)) return fail(err, c.side)
    if (!c.sawRemoteFeeds) {
      return fail(new Error(`${c.side} connection ended (${err ? err.message : 'end'}) before the multifeed exchange ` +
        `finished (noise handshake ${c.sawNoise ? 'done' : 'not done'}, no REPLICATE_FEEDS received)`), c.side)
    }
    emit({ event: 'peer-closed', side: c.side, reason: c.closeReason, elapsedMs: c.closedMs })
    checkExpect()
    maybeFinish()
  })
}

function listen (port) {
  return new Promise((resolve) => {
    server = net.createServer()
    server.on('connection', (sock) => {
      if (conns.listen.connected || shuttingDown) {
        sock.destroy()
        return
      }
      server.close() // exactly one connection
      replicateOver(conns.listen, sock)
    })
    server.on('error', (err) => fail(err, 'listen'))
    server.listen(port, '127.0.0.1', () => {
      emit({ event: 'listening', port: server.address().port, openMs: timings.openMs, writeMs: timings.writeMs, elapsedMs: Date.now() - T0 })
      resolve()
    })
  })
}

function dial ({ host, port }) {
  dialWithRetry({ host, port }, {
    stopped: () => shuttingDown,
    onConnect: (sock) => replicateOver(conns.dial, sock),
    onError: (err) => fail(err, 'dial')
  })
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
  setTimeout(onTimeout, opts.timeoutMs)
  await openCore(opts)
  if (shuttingDown) return
  if (hasExpectations()) checkTimer = setInterval(checkExpect, 100) // safety net besides feed events
  await listen(opts.listen)
  if (shuttingDown) return
  dial(opts.connect)
}

process.on('uncaughtException', (err) => fail(err))
process.on('unhandledRejection', (err) => fail(err))
process.stdout.on('error', () => {})
main().catch((err) => fail(err))
