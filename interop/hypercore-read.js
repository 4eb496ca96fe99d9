#!/usr/bin/env node
'use strict'
// Usage: node hypercore-read.js DIR [--append K] [--verify-all]
//
// Opens an existing hypercore 8 feed directory (written by JS or by kappa-rs) with
// hypercore(DIR, {createIfMissing: false}), waits for ready, reads every entry
// 0..length-1 with feed.get(i, {valueEncoding: 'binary', wait: false}) (a missing
// block is an error, never a hang), checks that the entry sizes add up to
// feed.byteLength, verifies the signature of the current state (feed.signature() ->
// the stored signature of block length-1; feed.verify(length-1, sig) recomputes the
// merkle roots and checks the ed25519 signature over them), and prints one JSON line:
//   {"key","length","byteLength","writable","digest","verified"}
// plus "treeVerified": every merkle tree node recomputed from the data (hypercore-crypto
// leaf/parent hashing) equals the node stored in the tree file; a local feed.get() does
// not re-hash data, so this is what catches a data file that disagrees with the tree.
// (+ "verifyError"/"treeError" on failure, + "signaturesVerified" with --verify-all).
//
// --append K  after the first report, append K entries `more-${i}` (i = 0..K-1) as
//             single appends (needs the secret key in DIR, i.e. writable), close,
//             reopen and print a second JSON line for the grown feed.
// --verify-all also verify every stored signature, not just the last one.
//
// An empty feed (length 0) has no signature and reports verified: true.
// Exit status: 0 ok; 1 error (message on stderr); 3 signature or tree check failed
// (the JSON line is still printed).

const fs = require('fs')
const path = require('path')
const hypercore = require('hypercore')
const hcrypto = require('hypercore-crypto')
const MerkleGenerator = require('merkle-tree-stream/generator')
const { ContentDigest, call, ready, close, parsePositiveInt, runMain, usageError } = require('./lib/common')

const USAGE = 'usage: node hypercore-read.js DIR [--append K] [--verify-all]'

function parseArgs (argv) {
  const opts = { dir: null, append: 0, verifyAll: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--append') {
      opts.append = parsePositiveInt('--append K', argv[++i], { allowZero: true })
    } else if (a.startsWith('--append=')) {
      opts.append = parsePositiveInt('--append K', a.slice('--append='.length), { allowZero: true })
    } else if (a === '--verify-all') {
      opts.verifyAll = true
    } else if (a === '-h' || a === '--help') {
      throw usageError('help requested')
    } else if (a.startsWith('--')) {
      throw usageError(`unknown option ${a}`)
    } else if (opts.dir === null) {
      opts.dir = a
    } else {
      throw usageError(`unexpected argument ${a}`)
    }
  }
  if (opts.dir === null) throw usageError('missing DIR')
  return opts
}

async function open (dir) {
  if (!fs.existsSync(dir)) throw new Error(`${dir} does not exist`)
  // Without this check hypercore(DIR) would create empty bitfield/signatures/tree
  // files in DIR before failing with "No hypercore is stored here".
  if (!fs.existsSync(path.join(dir, 'key'))) throw new Error(`no hypercore in ${dir} (no key file)`)
  const feed = hypercore(dir, { createIfMissing: false, valueEncoding: 'binary' })
  feed.on('error', () => {}) // open errors are reported through ready(cb)
  await ready(feed)
  return feed
}

async function verifyLast (feed) {
  if (feed.length === 0) return { verified: true } // nothing signed yet: vacuously true
  try {
    // feed.signature(cb) == feed.signature(length - 1, cb) -> {index, signature}
    // (the first non-blank stored signature at index >= length-1).
    const sig = await call(feed, 'signature')
    if (sig.index !== feed.length - 1) {
      return { verified: false, verifyError: `signature found for index ${sig.index}, expected ${feed.length - 1}` }
    }
    await call(feed, 'verify', sig.index, sig.signature) // rejects on a bad signature
    return { verified: true }
  } catch (err) {
    return { verified: false, verifyError: err.message }
  }
}

// Verify every stored signature (blocks with a blank signature slot are skipped).
async function verifyAll (feed) {
  let count = 0
  let i = 0
  while (i < feed.length) {
    const sig = await call(feed, 'signature', i)
    if (sig.index >= feed.length) break
    await call(feed, 'verify', sig.index, sig.signature)
    count++
    i = sig.index + 1
  }
  return count
}

// Compare a recomputed merkle node with the one stored in the tree file.
async function checkNode (feed, node) {
  let stored
  try {
    stored = await call(feed._storage, 'getNode', node.index)
  } catch (err) {
    return `tree node ${node.index}: ${err.message}`
  }
  if (stored.size !== node.size) return `tree node ${node.index}: stored size ${stored.size} != recomputed ${node.size}`
  if (!stored.hash.equals(node.hash)) return `tree node ${node.index}: stored hash != recomputed hash`
  return null
}

async function report (feed, opts) {
  const digest = new ContentDigest()
  // Local feed.get() does not re-hash data, so recompute the merkle tree from the
  // data (hypercore's own leaf/parent hashing) and compare every node with the tree file.
  const gen = new MerkleGenerator(hcrypto)
  let treeError = null
  let bytes = 0
  for (let i = 0; i < feed.length; i++) {
    const data = await call(feed, 'get', i, { valueEncoding: 'binary', wait: false })
    if (!Buffer.isBuffer(data)) throw new Error(`block ${i}: expected a Buffer`)
    digest.update(data)
    bytes += data.length
    if (!treeError) {
      for (const node of gen.next(data)) {
        treeError = await checkNode(feed, node)
        if (treeError) break
      }
    }
  }
  if (bytes !== feed.byteLength) {
    throw new Error(`sum of entry sizes ${bytes} != feed.byteLength ${feed.byteLength}`)
  }
  const v = await verifyLast(feed)
  const out = {
    key: feed.key.toString('hex'),
    length: feed.length,
    byteLength: feed.byteLength,
    writable: feed.writable,
    digest: digest.digestHex(),
    verified: v.verified,
    treeVerified: treeError === null
  }
  if (!v.verified) out.verifyError = v.verifyError
  if (treeError) out.treeError = treeError
  if (opts.verifyAll) {
    try {
      out.signaturesVerified = await verifyAll(feed)
    } catch (err) {
      out.verified = false
      out.verifyError = `verify-all: ${err.message}`
    }
  }
  return out
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  let feed = await open(opts.dir)
  let out = await report(feed, opts)
  process.stdout.write(JSON.stringify(out) + '\n')
  let ok = out.verified && out.treeVerified

  if (opts.append > 0) {
    if (!feed.writable) {
      await close(feed)
      throw new Error('--append: feed is not writable (no secret key in DIR)')
    }
    const start = feed.length
    for (let i = 0; i < opts.append; i++) {
      await call(feed, 'append', Buffer.from(`more-${i}`, 'utf8'))
    }
    if (feed.length !== start + opts.append) throw new Error(`length ${feed.length} after append, expected ${start + opts.append}`)
    await close(feed)
    // Reopen from disk so the second report reflects what was persisted.
    feed = await open(opts.dir)
    out = await report(feed, opts)
    process.stdout.write(JSON.stringify(out) + '\n')
    ok = ok && out.verified && out.treeVerified
  }

  await close(feed)
  if (!ok) process.exitCode = 3
}

runMain(USAGE, main)
