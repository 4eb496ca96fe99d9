'use strict'
// Shared helpers for the interop scripts (pinned JS stack: hypercore 8.14.0, sodium-native 2.4.9).

const fs = require('fs')
const path = require('path')
const net = require('net')
const sodium = require('sodium-native')

// ed25519 key pair from a 32-byte seed (libsodium crypto_sign_seed_keypair).
function keyPairFromSeed (seedHex) {
  if (typeof seedHex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(seedHex)) {
    throw new Error('SEED_HEX must be exactly 64 hex characters (32 bytes)')
  }
  const seed = Buffer.from(seedHex, 'hex')
  const publicKey = Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES)
  const secretKey = Buffer.alloc(sodium.crypto_sign_SECRETKEYBYTES)
  sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed)
  return { publicKey, secretKey }
}

// Streaming content digest: BLAKE2b-256 (crypto_generichash, no key) over
// u32be(len(entry)) || entry, for every entry in order.
class ContentDigest {
  constructor () {
    // sodium-native 2 (kappa-core 6 stack) has instances; sodium-native 3 (the kappa-core 7
    // stack in kc7/) has init/update/final on a state buffer.
    if (sodium.crypto_generichash_instance) {
      this._h = sodium.crypto_generichash_instance(null, 32)
    } else {
      const state = Buffer.alloc(sodium.crypto_generichash_STATEBYTES)
      sodium.crypto_generichash_init(state, null, 32)
      this._h = {
        update: (buf) => sodium.crypto_generichash_update(state, buf),
        final: (out) => sodium.crypto_generichash_final(state, out)
      }
    }
    this._len = Buffer.alloc(4)
  }

  update (entry) {
    if (entry.length > 0xffffffff) throw new Error('entry too large for u32 length prefix')
    this._len.writeUInt32BE(entry.length, 0)
    this._h.update(this._len)
    this._h.update(entry)
  }

  digestHex () {
    const out = Buffer.alloc(32)
    this._h.final(out)
    return out.toString('hex')
  }
}

// Promise wrapper for node-style callback methods.
function call (obj, method, ...args) {
  return new Promise((resolve, reject) => {
    obj[method](...args, (err, res) => (err ? reject(err) : resolve(res)))
  })
}

function ready (feed) {
  return new Promise((resolve, reject) => {
    feed.ready((err) => (err ? reject(err) : resolve()))
  })
}

function close (feed) {
  return new Promise((resolve, reject) => {
    feed.close((err) => (err ? reject(err) : resolve()))
  })
}

function parsePositiveInt (name, value, { allowZero = false } = {}) {
  if (value === undefined || !/^[0-9]+$/.test(String(value))) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(value)}`)
  }
  const n = Number(value)
  if (!Number.isSafeInteger(n) || (!allowZero && n === 0)) {
    throw new Error(`${name} must be ${allowZero ? '>= 0' : '>= 1'}, got ${value}`)
  }
  return n
}

// Run main(); print "error: ..." on stderr and exit 1 on failure.
function runMain (usage, main) {
  main().catch((err) => {
    process.stderr.write(`error: ${err && err.message ? err.message : err}\n`)
    if (usage && err && err.usage) process.stderr.write(usage + '\n')
    if (process.env.INTEROP_DEBUG && err && err.stack) process.stderr.write(err.stack + '\n')
    process.exit(1)
  })
}

function usageError (message) {
  const err = new Error(message)
  err.usage = true
  return err
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// One JSON line on stdout (a closed stdout is ignored).
function emit (obj) {
  try {
    process.stdout.write(JSON.stringify(obj) + '\n')
  } catch (_) {}
}

// --flag NAME:N (N >= 0).
function parseNameN (flag, v) {
  const i = v.lastIndexOf(':')
  if (i <= 0) throw usageError(`${flag} needs NAME:N, got ${JSON.stringify(v)}`)
  return { name: v.slice(0, i), n: parsePositiveInt(`${flag} N`, v.slice(i + 1), { allowZero: true }) }
}

// The peer hung up (ECONNRESET, EPIPE, premature close) rather than failed.
function isTransportClose (err) {
  return !!err && (err.code === 'ECONNRESET' || err.code === 'EPIPE' || /premature close/i.test(err.message || ''))
}

// multifeed 5 storage: feed key (hex) -> local name (null if none), from DIR/<n>/{key,localname}.
function localnames (dir) {
  const byKey = {}
  let entries = []
  try { entries = fs.readdirSync(dir) } catch (_) {}
  for (const n of entries) {
    if (!/^[0-9]+$/.test(n)) continue
    try {
      const key = fs.readFileSync(path.join(dir, n, 'key'))
      if (key.length !== 32) continue
      const ln = path.join(dir, n, 'localname')
      byKey[key.toString('hex')] = fs.existsSync(ln) ? fs.readFileSync(ln).toString('utf8') : null
    } catch (_) {}
  }
  return byKey
}

// The feeds of multifeed `mf` (null or closed: none), sorted by key.
function sortedFeeds (mf) {
  if (!mf || mf.closed) return []
  return mf.feeds()
    .filter((f) => f.key)
    .sort((a, b) => Buffer.compare(a.key, b.key))
}

// Every feed of `mf` (stored in `dir`): key, length, byteLength, blocks held, content digest
// of the blocks held, local name, writable; plus the feed count, total length and whether
// every feed holds all its blocks.
async function feedReport (mf, dir) {
  const names = localnames(dir)
  const feeds = []
  let totalLength = 0
  let complete = true
  for (const feed of sortedFeeds(mf)) {
    const key = feed.key.toString('hex')
    const len = feed.length
    const digest = new ContentDigest()
    let downloaded = 0
    for (let i = 0; i < len; i++) {
      if (!feed.has(i)) continue
      digest.update(await call(feed, 'get', i, { valueEncoding: 'binary', wait: false }))
      downloaded++
    }
    if (downloaded !== len) complete = false
    totalLength += len
    feeds.push({
      key,
      length: len,
      byteLength: feed.byteLength,
      downloaded,
      digest: digest.digestHex(),
      localname: names[key] === undefined ? null : names[key],
      writable: !!feed.writable
    })
  }
  return { feeds, feedCount: feeds.length, totalLength, complete }
}

// Dials host:port, retrying every 100 ms while the port refuses (the peer may not listen
// yet), until stopped() says to give up. Calls onConnect(socket) or onError(err) once.
function dialWithRetry ({ host, port }, { stopped, onConnect, onError }) {
  const attempt = () => {
    if (stopped()) return
    const sock = net.connect({ host, port })
    const onerror = (err) => {
      sock.destroy()
      if (err.code === 'ECONNREFUSED') setTimeout(attempt, 100)
      else onError(err)
    }
    sock.once('error', onerror)
    sock.once('connect', () => {
      sock.removeListener('error', onerror)
      onConnect(sock)
    })
  }
  attempt()
}

module.exports = {
  keyPairFromSeed,
  ContentDigest,
  call,
  ready,
  close,
  parsePositiveInt,
  runMain,
  usageError,
  sleep,
  emit,
  parseNameN,
  isTransportClose,
  localnames,
  sortedFeeds,
  feedReport,
  dialWithRetry
}
