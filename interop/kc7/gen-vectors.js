#!/usr/bin/env node
'use strict'
// Byte vectors of the kappa-core 7 generation, made by the real JS (hypercore-protocol 8.0.7
// with simple-hypercore-protocol 2.1.2 and noise-protocol 3.0.1; hypercore 9.12.0).
//
// usage: node gen-vectors.js OUT_DIR
//   writes OUT_DIR/handshake8.json  one deterministic hypercore-protocol 8 session: the Noise
//                                   XX handshake (Noise_XX_25519_ChaChaPoly_BLAKE2b) and the
//                                   encrypted transport after it
//          OUT_DIR/feed9.json       a hypercore 9 feed signed in the 40-byte form
//                                   (treeHash(roots) || u64be(length)), step by step, and its
//                                   files
// Everything is deterministic: the RNG (noise ephemeral keys, payload nonces) is replaced by
// a seeded one before any library loads; running it twice gives the same bytes.

const fs = require('fs')
const path = require('path')

const sodium = require('sodium-native')

let rngCounter = 0
function detBytes (n, label) {
  const out = Buffer.alloc(n)
  let off = 0
  while (off < n) {
    const h = Buffer.alloc(64)
    const c = Buffer.alloc(4)
    c.writeUInt32BE(rngCounter++)
    sodium.crypto_generichash(h, Buffer.concat([Buffer.from(label), c]))
    h.copy(out, off, 0, Math.min(64, n - off))
    off += 64
  }
  return out
}
const hex = (b) => Buffer.from(b).toString('hex')

const generatedKx = []
sodium.crypto_kx_keypair = function (pk, sk) {
  const seed = detBytes(32, 'kx-seed')
  sodium.crypto_kx_seed_keypair(pk, sk, seed)
  generatedKx.push({ seed: hex(seed), publicKey: hex(pk), secretKey: hex(sk) })
}
const generatedRandom = []
sodium.randombytes_buf = function (buf) {
  const b = detBytes(buf.length, 'randombytes')
  b.copy(buf)
  generatedRandom.push(hex(b))
}

const Protocol = require('hypercore-protocol')
const hypercore = require('hypercore')
const hcrypto = require('hypercore-crypto')
const ram = require('random-access-memory')

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const call = (obj, m, ...args) => new Promise((resolve, reject) => obj[m](...args, (e, r) => e ? reject(e) : resolve(r)))

function version (p) { return require(p + '/package.json').version }

// ---------------------------------------------------------------------------
function hookPlain (stream, log) {
  const smc = stream.state._messages
  const origSend = smc.send.bind(smc)
  smc.send = function (channel, type, message) {
    const f = origSend(channel, type, message)
    log.push({ channel, type, frame: Buffer.from(f) })
    return f
  }
}

async function genHandshake () {
  const staticA = Protocol.keyPair(Buffer.alloc(32, 0xa1))
  const staticB = Protocol.keyPair(Buffer.alloc(32, 0xb2))
  const kxStart = generatedKx.length
  const rndStart = generatedRandom.length
  const feedKey = hcrypto.keyPair(Buffer.alloc(32, 0x11)).publicKey

  const a = new Protocol(true, { keyPair: staticA, timeout: false })
  const b = new Protocol(false, { keyPair: staticB, timeout: false })
  const plainA = []; const plainB = []
  hookPlain(a, plainA); hookPlain(b, plainB)
  const wireA = []; const wireB = []
  a.on('data', (d) => { wireA.push(Buffer.from(d)); b.write(d) })
  b.on('data', (d) => { wireB.push(Buffer.from(d)); a.write(d) })
  await new Promise((resolve) => { let n = 0; const done = () => { if (++n === 2) resolve() }; a.once('handshake', done); b.once('handshake', done) })
  const hsA = wireA.length; const hsB = wireB.length

  const chA = a.open(feedKey, {})
  const chB = b.open(feedKey, {})
  await tick(20)
  chA.status({ uploading: true, downloading: false })
  chB.want({ start: 0, length: 1048576 })
  chA.have({ start: 0, length: 1048576, bitfield: Buffer.from([0x02, 0x0a]) })
  chB.request({ index: 0, bytes: 0, hash: false, nodes: 0 })
  chA.data({ index: 0, value: Buffer.from('hello'), nodes: [], signature: Buffer.alloc(64, 7) })
  chB.close()
  await tick(20)

  const rec = {
    description: 'One complete hypercore-protocol 8.0.7 session (simple-hypercore-protocol 2.1.2, noise-protocol 3.0.1) between an initiator (A) and a responder (B), made deterministic by fixing all randomness. Static keys are crypto_kx_seed_keypair(seed); the ephemeral keys actually used are listed in order (A first).',
    versions: { 'hypercore-protocol': version('hypercore-protocol'), 'simple-hypercore-protocol': version('simple-hypercore-protocol'), 'noise-protocol': version('noise-protocol') },
    protocolName: 'Noise_XX_25519_ChaChaPoly_BLAKE2b',
    prologueHex: '',
    initiatorStatic: { seed: 'a1'.repeat(32), publicKey: hex(staticA.publicKey), secretKey: hex(staticA.secretKey) },
    responderStatic: { seed: 'b2'.repeat(32), publicKey: hex(staticB.publicKey), secretKey: hex(staticB.secretKey) },
    generatedKeyPairsInOrder: generatedKx.slice(kxStart),
    randomBytesInOrder: generatedRandom.slice(rndStart),
    initiatorPayloadNonce: hex(a.state._payload.nonce),
    responderPayloadNonce: hex(b.state._payload.nonce),
    handshakeChunksAtoB: wireA.slice(0, hsA).map(hex),
    handshakeChunksBtoA: wireB.slice(0, hsB).map(hex),
    initiatorSplit: { txKey: hex(a.state._split.tx.slice(0, 32)), rxKey: hex(a.state._split.rx.slice(0, 32)) },
    responderSplit: { txKey: hex(b.state._split.tx.slice(0, 32)), rxKey: hex(b.state._split.rx.slice(0, 32)) },
    initiatorSeesRemoteStatic: hex(a.remotePublicKey),
    responderSeesRemoteStatic: hex(b.remotePublicKey),
    capabilityKey: hex(feedKey),
    initiatorCapability: hex(a.state.capability(feedKey)),
    responderCapability: hex(b.state.capability(feedKey)),
    transport: {
      description: 'After the handshake each side XORs everything it sends with one continuous XSalsa20 key stream (own split tx key, own payload nonce), as in hypercore-protocol 7. plaintext*Hex: the frames a side sent after the handshake, concatenated; ciphertext*Hex: what went on the wire.',
      plaintextFramesA: plainA.map((f) => ({ channel: f.channel, type: f.type, frameHex: hex(f.frame) })),
      plaintextFramesB: plainB.map((f) => ({ channel: f.channel, type: f.type, frameHex: hex(f.frame) })),
      plaintextAHex: hex(Buffer.concat(plainA.map((f) => f.frame))),
      ciphertextAHex: hex(Buffer.concat(wireA.slice(hsA))),
      plaintextBHex: hex(Buffer.concat(plainB.map((f) => f.frame))),
      ciphertextBHex: hex(Buffer.concat(wireB.slice(hsB)))
    }
  }
  a.destroy(); b.destroy()
  return rec
}

// ---------------------------------------------------------------------------
async function genFeed () {
  const kp = hcrypto.keyPair(Buffer.alloc(32, 0x09))
  const files = {}
  const storage = (name) => { files[name] = files[name] || ram(); return files[name] }
  const feed = hypercore(storage, kp.publicKey, { secretKey: kp.secretKey, valueEncoding: 'binary' })
  await call(feed, 'ready')
  const batches = [['a'], ['bb', 'ccc'], ['d'], ['eeee', 'f', 'gg', 'h'], ['i']]
  const steps = []
  for (const batch of batches) {
    await call(feed, 'append', batch.map((s) => Buffer.from(s)))
    const length = feed.length
    const roots = await call(feed, 'rootHashes', length - 1)
    const treeHash = hcrypto.tree(roots)
    const signable = hcrypto.signable(roots, length)
    const sig = await call(feed, 'signature', length - 1)
    if (sig.index !== length - 1) throw new Error('signature not in the last slot')
    steps.push({
      appended: batch,
      length,
      byteLength: feed.byteLength,
      roots: roots.map((r) => ({ index: r.index, size: r.size, hash: hex(r.hash) })),
      treeHash: hex(treeHash),
      signable: hex(signable),
      signature: hex(sig.signature),
      verifies40: hcrypto.verify(signable, sig.signature, kp.publicKey),
      verifies32: hcrypto.verify(treeHash, sig.signature, kp.publicKey)
    })
  }
  const read = (name) => new Promise((resolve, reject) => {
    const s = files[name]
    if (!s) return resolve(null)
    s.stat((err, st) => {
      if (err) return resolve(Buffer.alloc(0))
      if (st.size === 0) return resolve(Buffer.alloc(0))
      s.read(0, st.size, (e, b) => e ? reject(e) : resolve(b))
    })
  })
  const out = {}
  for (const name of ['key', 'secret_key', 'data', 'tree', 'signatures', 'bitfield']) {
    const b = await read(name)
    if (b) out[name] = hex(b)
  }
  await call(feed, 'close')
  return {
    description: 'A hypercore 9.12.0 feed (random-access-memory storage) written in five append calls; every signature is ed25519 over signable = treeHash(roots) || u64be(length) (40 bytes), one per append call in the slot of its last block. files: the bytes of each storage file after the last append.',
    versions: { hypercore: version('hypercore'), 'hypercore-crypto': version('hypercore-crypto') },
    keyPair: { seed: '09'.repeat(32), publicKey: hex(kp.publicKey), secretKey: hex(kp.secretKey) },
    steps,
    files: out
  }
}

async function main () {
  const dir = process.argv[2]
  if (!dir) throw new Error('usage: node gen-vectors.js OUT_DIR')
  fs.mkdirSync(dir, { recursive: true })
  const hs = await genHandshake()
  fs.writeFileSync(path.join(dir, 'handshake8.json'), JSON.stringify(hs, null, 2) + '\n')
  const feed = await genFeed()
  fs.writeFileSync(path.join(dir, 'feed9.json'), JSON.stringify(feed, null, 2) + '\n')
  process.stdout.write(JSON.stringify({ written: ['handshake8.json', 'feed9.json'], dir }) + '\n')
}

main().catch((err) => { process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`); process.exit(1) })
