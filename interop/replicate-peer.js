#!/usr/bin/env node
'use strict'
// JS replication peer for one hypercore 8 feed over hypercore-protocol 7 (TCP, loopback).
//
// usage: node replicate-peer.js --dir DIR (--listen PORT | --connect HOST:PORT)
//          (--initiator | --responder) [--live]
//          [--seed HEX32 --append N [--batch B]] [--key HEX32]
//          [--expect-length N] [--append-during-live K] [--sparse START:END]
//          [--timeout-ms MS]
//
// Feed:
//   --seed HEX32   writable feed, key pair = crypto_sign_seed_keypair(seed)
//                  (creates DIR or reopens a feed with the same key).
//   --entry-size S pad (with 'x') or cut every appended entry to S bytes (benchmarks).
//   --append N     append N entries `entry-${index}` (index = absolute block index, so on
//                  a fresh feed entry-0..entry-(N-1)), in feed.append([...]) batches of B
//                  (--batch, default 1000). Needs a writable feed. Done before listening or
//                  connecting.
//   --key HEX32    read-only replica of that public key (created if DIR is empty).
//   neither        open the existing feed in DIR (DIR/key must exist).
//   --sparse S:E   open with sparse: true and download only blocks S..E-1
//                  (feed.download({start: S, end: E})). Non-writable feeds only.
//
// Network: --listen PORT listens on 127.0.0.1:PORT (0 = any), prints
//   {"event":"listening","port":P,"key":...,"length":...} and serves exactly ONE connection.
//   --connect HOST:PORT dials (ECONNREFUSED is retried every 100 ms until the deadline).
//   --initiator/--responder is the protocol role, independent of who listens.
//
// Termination (every path ends with process.exit):
//   non-live: when the replication stream ends cleanly (pump callback without error),
//             both sides opened the feed channel ('peer-open') and a protocol Close was
//             received: print done, exit 0 (a bare TCP end is an error, because
//             hypercore-protocol 7 ends its stream on any clean TCP end). A non-live sparse replica calls
//             feed.setDownloading(false) once its range is complete, so that the
//             channels close (hypercore never auto-ends sparse feeds).
//   live:     --expect-length N: once feed.length >= N and feed.downloaded(0, N) === N,
//             print done, exit 0. --sparse without --expect-length: done when the range
//             is complete. --append-during-live K (writable): 500 ms after the first
//             'peer-open', append `live-${i}` (i = 0..K-1) one at a time, 10 ms apart,
//             print {"event":"live-appended",...}, then wait for the remote to close
//             (done, exit 0) or for --timeout-ms (done with "closedBy":"timeout", exit 0).
//             Otherwise the remote closing the connection prints done, exit 0 (an error
//             if --expect-length was not reached yet).
//   --timeout-ms MS (default 30000): {"event":"timeout",...state} and exit 2.
//   any stream/feed error: {"event":"error","message":...} and exit 1. In live mode,
//   ECONNRESET/EPIPE/"premature close" count as the remote closing.
//
// done line: {"event":"done","key","length","byteLength","digest","downloaded",
//             "verified","writable","closedBy","elapsedMs"}
//   digest = lib/common ContentDigest over the locally present blocks 0..length-1 in
//   order (missing blocks skipped); downloaded = number of those present blocks;
//   verified = the stored signature of slot length-1 verifies (feed.verify); true for an
//   empty feed. The stream is destroyed and the feed closed BEFORE the line is printed,
//   so DIR is unlocked (flock released) as soon as the process exits right after.

const fs = require('fs')
const path = require('path')
const net = require('net')
const hypercore = require('hypercore')
const pump = require('pump')
const {
  keyPairFromSeed, ContentDigest, call, ready, close, parsePositiveInt, usageError, sleep, emit, isTransportClose, dialWithRetry
} = require('./lib/common')

const USAGE = 'usage: node replicate-peer.js --dir DIR (--listen PORT | --connect HOST:PORT) ' +
  '--initiator|--responder [--live] [--seed HEX32 --append N [--batch B]] [--key HEX32] ' +
  '[--expect-length N] [--append-during-live K] [--sparse START:END] [--timeout-ms MS]'

const T0 = Date.now()
let T_REPL = null
// ---------------------------------------------------------------- arguments

function parseArgs (argv) {
  const o = {
    dir: null,
    listen: null,
    connect: null,
    initiator: null,
    live: false,
    seed: null,
    append: 0,
    batch: 1000,
    entrySize: 0,
    key: null,
    expectLength: null,
    appendDuringLive: 0,
    sparse: null,
    timeoutMs: 30000
  }
  const takesValue = new Set(['--dir', '--listen', '--connect', '--seed', '--append', '--batch', '--entry-size', '--key',
    '--expect-length', '--append-during-live', '--sparse', '--timeout-ms'])
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
      case '--seed': keyPairFromSeed(v); o.seed = v; break
      case '--append': o.append = parsePositiveInt('--append N', v, { allowZero: true }); break
      case '--batch': o.batch = parsePositiveInt('--batch B', v); break
      case '--entry-size': o.entrySize = parsePositiveInt('--entry-size S', v); break
      case '--key':
        if (!/^[0-9a-fA-F]{64}$/.test(v)) throw usageError('--key must be 64 hex characters')
        o.key = Buffer.from(v, 'hex')
        break
      case '--expect-length': o.expectLength = parsePositiveInt('--expect-length N', v, { allowZero: true }); break
      case '--append-during-live': o.appendDuringLive = parsePositiveInt('--append-during-live K', v, { allowZero: true }); break
      case '--sparse': {
        const m = /^([0-9]+):([0-9]+)$/.exec(v)
        if (!m) throw usageError(`--sparse needs START:END, got ${JSON.stringify(v)}`)
        const start = Number(m[1])
        const end = Number(m[2])
        if (!(end > start)) throw usageError('--sparse needs START < END')
        o.sparse = { start, end }
        break
      }
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
  if (o.seed && o.key) throw usageError('--seed and --key are mutually exclusive')
  if (o.expectLength !== null && !o.live) throw usageError('--expect-length needs --live')
  if (o.appendDuringLive && !o.live) throw usageError('--append-during-live needs --live')
  return o
}

// ---------------------------------------------------------------- state

let opts = null
let feed = null
let server = null
let socket = null
let stream = null
let shuttingDown = false
let appendsDone = false
let sparseDone = false
let peerOpened = false // feed 'peer-open': both sides opened the feed channel
let remoteClosedChannel = false // a protocol Close message was received

async function verifyLast (f) {
  if (f.length === 0) return { verified: true }
  try {
    const sig = await call(f, 'signature') // first non-blank slot >= length-1
    if (sig.index !== f.length - 1) {
      return { verified: false, verifyError: `signature found for index ${sig.index}, expected ${f.length - 1}` }
    }
    await call(f, 'verify', sig.index, sig.signature)
    return { verified: true }
  } catch (err) {
    return { verified: false, verifyError: err.message }
  }
}

async function snapshot () {
  const out = { key: null, length: 0, byteLength: 0, digest: null, downloaded: 0, verified: false }
  if (!feed || !feed.opened || feed.closed) return out
  out.key = feed.key.toString('hex')
  const len = feed.length
  out.length = len
  out.byteLength = feed.byteLength
  const digest = new ContentDigest()
  let downloaded = 0
  for (let i = 0; i < len; i++) {
    if (!feed.has(i)) continue
    const data = await call(feed, 'get', i, { valueEncoding: 'binary', wait: false })
    digest.update(data)
    downloaded++
  }
  out.digest = digest.digestHex()
  out.downloaded = downloaded
  const v = await verifyLast(feed)
  out.verified = v.verified
  if (v.verifyError) out.verifyError = v.verifyError
  out.writable = feed.writable
  return out
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
  const replicateMs = T_REPL === null ? null : Date.now() - T_REPL
  // Hard stop in case anything below hangs.
  setTimeout(() => {
    emit(Object.assign({ event: kind }, extra, { elapsedMs: Date.now() - T0, replicateMs, note: 'forced exit during shutdown' }))
    process.exit(code)
  }, 5000).unref()

  teardownNetwork()
  let line = { event: kind }
  if (kind === 'error') {
    line.message = extra.message
  } else {
    try {
      Object.assign(line, await snapshot())
    } catch (err) {
      line.snapshotError = err.message
    }
    Object.assign(line, extra)
  }
  line.elapsedMs = Date.now() - T0
  // From the start of replication on the connected socket to its end (for
  // benchmarks: excludes node start-up, feed creation and closing).
  line.replicateMs = replicateMs
  if (feed) {
    try { await Promise.race([close(feed), sleep(3000)]) } catch (_) {}
  }
  emit(line)
  process.exit(code)
}

function fail (err) {
  const message = err && err.message ? err.message : String(err)
  if (process.env.INTEROP_DEBUG && err && err.stack) process.stderr.write(err.stack + '\n')
  shutdown(1, 'error', { message })
}

// ---------------------------------------------------------------- feed

async function openFeed (o) {
  if (o.seed) {
    const kp = keyPairFromSeed(o.seed)
    feed = hypercore(o.dir, kp.publicKey, { secretKey: kp.secretKey, valueEncoding: 'binary' })
  } else if (o.key) {
    feed = hypercore(o.dir, o.key, { valueEncoding: 'binary', sparse: !!o.sparse })
  } else {
    // Avoid hypercore creating empty files in a directory without a feed.
    if (!fs.existsSync(path.join(o.dir, 'key'))) throw new Error(`no hypercore in ${o.dir} (no key file); give --seed or --key`)
    feed = hypercore(o.dir, { createIfMissing: false, valueEncoding: 'binary', sparse: !!o.sparse })
  }
  let opened = false
  feed.on('error', (err) => { if (opened) fail(err) }) // open errors come through ready()
  await ready(feed)
  opened = true

  if (o.sparse && feed.writable) throw new Error('--sparse needs a non-writable replica')
  if ((o.append || o.appendDuringLive) && !feed.writable) throw new Error('--append/--append-during-live need a writable feed (--seed)')

  let remaining = o.append
  while (remaining > 0) {
    const n = Math.min(o.batch, remaining)
    const base = feed.length
    const batch = []
    for (let i = 0; i < n; i++) {
      const e = Buffer.from(`entry-${base + i}`)
      // --entry-size S pads (with 'x') or cuts each entry to S bytes.
      batch.push(opts.entrySize ? Buffer.concat([e, Buffer.alloc(Math.max(0, opts.entrySize - e.length), 'x')]).subarray(0, opts.entrySize) : e)
    }
    await call(feed, 'append', batch)
    remaining -= n
  }

  if (o.sparse) {
    // Registered before replicating; it completes via a connected peer.
    feed.download({ start: o.sparse.start, end: o.sparse.end }, (err) => {
      if (shuttingDown) return
      if (err) return fail(err)
      sparseDone = true
      if (!o.live) {
        // hypercore never auto-ends a sparse feed (Peer._autoEnd): tell the remote we
        // are no longer downloading, which makes both sides send Close.
        feed.setDownloading(false)
      } else if (o.expectLength === null) {
        shutdown(0, 'done', { closedBy: 'local' })
      }
    })
  }
}

function expectSatisfied () {
  const n = opts.expectLength
  return n !== null && feed.length >= n && feed.downloaded(0, n) === n
}

function checkExpect () {
  if (shuttingDown || opts.expectLength === null) return
  if (expectSatisfied()) shutdown(0, 'done', { closedBy: 'local' })
}

async function appendDuringLive (k) {
  for (let i = 0; i < k; i++) {
    if (shuttingDown) return
    await call(feed, 'append', Buffer.from(`live-${i}`))
    if (i + 1 < k) await sleep(10)
  }
  appendsDone = true
  if (!shuttingDown) emit({ event: 'live-appended', count: k, length: feed.length, elapsedMs: Date.now() - T0 })
}

// ---------------------------------------------------------------- replication

function replicateOver (sock) {
  T_REPL = Date.now()
  socket = sock
  sock.setNoDelay(true)
  stream = feed.replicate(opts.initiator, { live: opts.live })

  if (opts.live) {
    feed.on('download', () => setImmediate(checkExpect))
    feed.on('append', () => setImmediate(checkExpect))
  }
  // 'prefinalize' is emitted only when a Close message for a known channel arrives.
  stream.on('prefinalize', () => { remoteClosedChannel = true })
  feed.on('peer-open', () => {
    if (peerOpened) return
    peerOpened = true
    if (opts.live) setImmediate(checkExpect)
    if (opts.appendDuringLive) {
      setTimeout(() => {
        appendDuringLive(opts.appendDuringLive).catch(fail)
      }, 500)
    }
  })

  pump(sock, stream, sock, (err) => {
    if (shuttingDown) return
    if (!opts.live) {
      if (err) return fail(err)
      // hypercore-protocol ends its readable side on *any* clean TCP end ('finish' ->
      // push(null)), so a clean pump end alone does not prove a proper replication end.
      if (!peerOpened) return fail(new Error('connection ended before the remote opened the feed channel'))
      if (!remoteClosedChannel) return fail(new Error('connection ended without a Close message for the feed channel'))
      return shutdown(0, 'done', { closedBy: 'stream-end' })
    }
    // live: the stream only ends when the remote closes the connection (or on error)
    if (err && !isTransportClose(err)) return fail(err)
    if (opts.expectLength !== null && !expectSatisfied()) {
      return fail(new Error(`remote closed the connection (${err ? err.message : 'end'}) before length ${opts.expectLength} was complete (length ${feed.length}, downloaded ${feed.downloaded(0, feed.length)})`))
    }
    if (opts.appendDuringLive && !appendsDone) {
      return fail(new Error('remote closed the connection before the live appends were done'))
    }
    if (opts.sparse && !sparseDone) {
      return fail(new Error('remote closed the connection before the sparse range was complete'))
    }
    shutdown(0, 'done', { closedBy: 'remote' })
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
    server.close() // exactly one connection
    replicateOver(sock)
  })
  server.on('error', fail)
  server.listen(port, '127.0.0.1', () => {
    emit({
      event: 'listening',
      port: server.address().port,
      key: feed.key.toString('hex'),
      length: feed.length,
      elapsedMs: Date.now() - T0
    })
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

  setTimeout(() => {
    if (opts.appendDuringLive && appendsDone) shutdown(0, 'done', { closedBy: 'timeout' })
    else shutdown(2, 'timeout', {})
  }, opts.timeoutMs)

  await openFeed(opts)
  if (shuttingDown) return
  if (opts.listen !== null) listen(opts.listen)
  else connect(opts.connect)
}

process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)
process.stdout.on('error', () => {})
main().catch(fail)
