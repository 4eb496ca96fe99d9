#!/usr/bin/env node
'use strict'
// Usage: node hypercore-write.js DIR SEED_HEX N [BATCH]
//
// Creates a hypercore 8 feed in DIR (random-access-file storage, the default for
// hypercore(DIR)) owned by the ed25519 key pair derived from the 32-byte SEED_HEX,
// appends N entries `entry-${i}` (UTF-8) in batches of BATCH (default 1 = one
// feed.append(buf) per entry, i.e. one signature per entry; BATCH > 1 uses
// feed.append([bufs...]), one signature per batch), closes the feed and prints one
// JSON line: {"key","length","byteLength","digest"}.
// digest = hex BLAKE2b-256 over u32be(len) || bytes of every entry in order.
// DIR must not already contain a feed (refuses to append to an existing one).

const fs = require('fs')
const path = require('path')
const hypercore = require('hypercore')
const { keyPairFromSeed, ContentDigest, call, ready, close, parsePositiveInt, runMain, usageError } = require('./lib/common')

const USAGE = 'usage: node hypercore-write.js DIR SEED_HEX N [BATCH]'

async function main () {
  const args = process.argv.slice(2)
  if (args.length < 3 || args.length > 4) throw usageError('wrong number of arguments')
  const [dir, seedHex, nArg, batchArg] = args
  const n = parsePositiveInt('N', nArg, { allowZero: true })
  const batch = batchArg === undefined ? 1 : parsePositiveInt('BATCH', batchArg)
  const { publicKey, secretKey } = keyPairFromSeed(seedHex)

  if (fs.existsSync(path.join(dir, 'key')) || fs.existsSync(path.join(dir, 'bitfield'))) {
    throw new Error(`${dir} already contains a hypercore (refusing to append to it)`)
  }

  const feed = hypercore(dir, { key: publicKey, secretKey, valueEncoding: 'binary' })
  await ready(feed)
  if (!feed.writable) throw new Error('feed is not writable after ready')

  const digest = new ContentDigest()
  for (let start = 0; start < n; start += batch) {
    const end = Math.min(n, start + batch)
    const bufs = []
    for (let i = start; i < end; i++) {
      const b = Buffer.from(`entry-${i}`, 'utf8')
      digest.update(b)
      bufs.push(b)
    }
    await call(feed, 'append', batch === 1 ? bufs[0] : bufs)
  }

  const out = {
    key: feed.key.toString('hex'),
    length: feed.length,
    byteLength: feed.byteLength,
    digest: digest.digestHex()
  }
  await close(feed)
  if (out.length !== n) throw new Error(`feed length ${out.length} != N ${n}`)
  process.stdout.write(JSON.stringify(out) + '\n')
}

runMain(USAGE, main)
