#!/usr/bin/env node
'use strict'
// Usage:
//   node multifeed-tool.js write DIR NAME:N [NAME:N ...]
//       Opens (or creates) a JS multifeed 5 storage folder the way kappa-core 6 does
//       (multifeed(DIR, {valueEncoding: 'json'})), and for each NAME:N appends N
//       entries {"n": i, "who": NAME} to the local writer NAME (created if missing),
//       in one batch. Then prints the folder's report (as `read`).
//   node multifeed-tool.js read DIR
//       Opens the folder with JS multifeed 5 and prints one JSON line:
//       {"feeds": [{key, length, byteLength, writable, digest, verified, localname}]}
//       in multifeed's feeds() order. digest: see lib/common.js (ContentDigest over
//       the raw block bytes). verified: the signature of the current state checks.
//       localname: the raw content of <n>/localname for the folder holding that key,
//       or null.

const fs = require('fs')
const path = require('path')
const multifeed = require('multifeed')
const { ContentDigest, call, runMain, usageError } = require('./lib/common')

const USAGE = 'usage: node multifeed-tool.js (write DIR NAME:N... | read DIR)'

function localnames (dir) {
  const byKey = {}
  for (let n = 0; ; n++) {
    const keyFile = path.join(dir, String(n), 'key')
    if (!fs.existsSync(keyFile)) break
    const key = fs.readFileSync(keyFile).toString('hex')
    const ln = path.join(dir, String(n), 'localname')
    byKey[key] = fs.existsSync(ln) ? fs.readFileSync(ln).toString('utf8') : null
  }
  return byKey
}

async function report (mf, dir) {
  const names = localnames(dir)
  const feeds = []
  for (const feed of mf.feeds()) {
    await call(feed, 'ready')
    const digest = new ContentDigest()
    for (let i = 0; i < feed.length; i++) {
      digest.update(await call(feed, 'get', i, { valueEncoding: 'binary', wait: false }))
    }
    let verified = true
    if (feed.length > 0) {
      try {
        const sig = await call(feed, 'signature')
        await call(feed, 'verify', sig.index, sig.signature)
        verified = sig.index === feed.length - 1
      } catch (err) {
        verified = false
      }
    }
    const key = feed.key.toString('hex')
    feeds.push({
      key,
      length: feed.length,
      byteLength: feed.byteLength,
      writable: feed.writable,
      digest: digest.digestHex(),
      verified,
      localname: names[key] === undefined ? null : names[key]
    })
  }
  return { feeds }
}

async function main (argv) {
  const [cmd, dir, ...rest] = argv
  if (!cmd || !dir) throw usageError('missing arguments')
  if (cmd !== 'write' && cmd !== 'read') throw usageError(`unknown command ${cmd}`)
  if (cmd === 'read' && !fs.existsSync(path.join(dir, '0', 'key'))) throw new Error(`no multifeed in ${dir}`)
  const mf = multifeed(dir, { valueEncoding: 'json' })
  await call(mf, 'ready')
  if (cmd === 'write') {
    for (const spec of rest) {
      const m = /^(.+):(\d+)$/.exec(spec)
      if (!m) throw usageError(`bad NAME:N ${spec}`)
      const name = m[1]
      const n = Number(m[2])
      const w = await call(mf, 'writer', name)
      const start = w.length
      const batch = []
      for (let i = start; i < start + n; i++) batch.push({ n: i, who: name })
      if (batch.length) await call(w, 'append', batch)
    }
  }
  const out = await report(mf, dir)
  await call(mf, 'close')
  process.stdout.write(JSON.stringify(out) + '\n')
}

runMain(USAGE, () => main(process.argv.slice(2)))
