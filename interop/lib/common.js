'use strict'
// Shared helpers for the interop scripts (pinned JS stack: hypercore 8.14.0, sodium-native 2.4.9).

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
    this._h = sodium.crypto_generichash_instance(null, 32)
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

module.exports = {
  keyPairFromSeed,
  ContentDigest,
  call,
  ready,
  close,
  parsePositiveInt,
  runMain,
  usageError
}
