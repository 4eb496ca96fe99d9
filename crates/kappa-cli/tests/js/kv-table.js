#!/usr/bin/env node
'use strict'
// A JS kappa-core 6 app over a kappa database directory written by the `kappa`
// CLI: a kappa-view-kv view mapping {key, id: "<feed hex>@<seq>", links} from
// each entry, as kappa-view-kv apps do.
//
// usage: NODE_PATH=interop/node_modules node kv-table.js DIR SHARED_KEY_HEX KEY...
// prints, per KEY, {"key": KEY, "heads": [{"id", "value"}]} (heads sorted by id),
// then exits 0; any error: {"event":"error","message"}, exit 1.

const kappa = require('kappa-core')
const kv = require('kappa-view-kv')
const memdb = require('memdb')

function fail (err) {
  console.log(JSON.stringify({ event: 'error', message: String(err && err.message || err) }))
  process.exit(1)
}

const [dir, keyHex, ...keys] = process.argv.slice(2)
if (!dir || !keyHex) fail('usage: kv-table.js DIR SHARED_KEY_HEX KEY...')

const core = kappa(dir, { valueEncoding: 'json', encryptionKey: Buffer.from(keyHex, 'hex') })
core.on('error', fail)
core.use('kv', kv(memdb(), function (msg, next) {
  const v = msg.value
  if (!v || typeof v !== 'object' || v.key === undefined) return next()
  next(null, [{ key: String(v.key), id: msg.key + '@' + msg.seq, links: v.links || [] }])
}))

core.ready('kv', function () {
  const out = []
  let i = 0
  ;(function nextKey () {
    if (i === keys.length) {
      for (const line of out) console.log(JSON.stringify(line))
      process.exit(0)
    }
    const key = keys[i++]
    core.api.kv.get(key, function (err, msgs) {
      if (err && err.notFound) msgs = []
      else if (err) return fail(err)
      const heads = msgs
        .map(m => ({ id: m.key + '@' + m.seq, value: m.value.value }))
        .sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
      out.push({ key, heads })
      nextKey()
    })
  })()
})
