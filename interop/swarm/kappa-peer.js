#!/usr/bin/env node
'use strict'
// A JS kappa-core 6 peer that meets peers as a hyperswarm 2 / Cabal peer does on a LAN:
// @hyperswarm/discovery 2.0.1 (multicast DNS; the DHT half has no bootstrap nodes, so
// nothing leaves the LAN) on the topic discoveryKey(shared key), replicating live over TCP
// with every peer found and every peer that connects. kappa-core 6 and hypercore-crypto
// come from the kappa-core 6 harness in ../node_modules.
//
// usage: node kappa-peer.js --dir DIR --shared-key HEX64 [--put KEY=VALUE ...] [--expect-keys N] [--kc7]
//   --kc7: take kappa-core 7 (multifeed 6, hypercore-protocol 8) from ../kc7/node_modules instead.
//   --put: appends {key, value, links: []} to the writer 'local' (the kappa-view-kv shape
//     `kappa put` writes) before joining.
//   --expect-keys N: once the feeds hold entries of N distinct keys (every block present),
//     prints {"event":"done","keys":[...]} and exits 0. Without it: runs until stdin closes.
// Prints {"event":"ready","port":P}, {"event":"found","peer":"HOST:PORT"} for each peer event,
// {"event":"connected","peer":...,"dialled":bool} for each session.
const net = require('net')
const path = require('path')
const discovery = require('@hyperswarm/discovery')
const harness = process.argv.includes('--kc7')
  ? path.join(__dirname, '..', 'kc7', 'node_modules')
  : path.join(__dirname, '..', 'node_modules')
const kappa = require(path.join(harness, 'kappa-core'))
const crypto = require(path.join(harness, 'hypercore-crypto'))
const pump = require(path.join(harness, 'pump'))

const emit = (o) => console.log(JSON.stringify(o))
const fail = (err) => { emit({ event: 'error', error: String(err && err.stack || err) }); process.exit(1) }

const args = process.argv.slice(2)
const o = { dir: null, key: null, puts: [], expectKeys: null }
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  const v = args[++i]
  if (a === '--dir') o.dir = v
  else if (a === '--shared-key') o.key = Buffer.from(v, 'hex')
  else if (a === '--put') { const [k, ...rest] = v.split('='); o.puts.push([k, rest.join('=')]) }
  else if (a === '--expect-keys') o.expectKeys = Number(v)
  else if (a === '--kc7') i--
  else fail(new Error('unknown argument ' + a))
}
if (!o.dir || !o.key || o.key.length !== 32) fail(new Error('usage: --dir DIR --shared-key HEX64 [--put K=V] [--expect-keys N]'))

const core = kappa(o.dir, { valueEncoding: 'json', encryptionKey: o.key })
const mf = core._logs
mf.on('error', fail)

function replicate (sock, initiator, peer) {
  sock.setNoDelay(true)
  emit({ event: 'connected', peer, dialled: initiator })
  pump(sock, core.replicate(initiator, { live: true }), sock, () => {})
}

async function keys () {
  const seen = new Set()
  for (const feed of mf.feeds()) {
    for (let i = 0; i < feed.length; i++) {
      if (!feed.has(i)) return null
      const v = await new Promise((resolve, reject) => feed.get(i, { wait: false }, (e, v) => e ? reject(e) : resolve(v)))
      if (v && typeof v.key === 'string') seen.add(v.key)
    }
  }
  return [...seen].sort()
}

core.writer('local', async (err, w) => {
  if (err) return fail(err)
  for (const [key, value] of o.puts) {
    await new Promise((resolve, reject) => w.append({ key, value, links: [] }, (e) => e ? reject(e) : resolve()))
  }
  const server = net.createServer((sock) => replicate(sock, false, sock.remoteAddress + ':' + sock.remotePort))
  server.on('error', fail)
  server.listen(0, '0.0.0.0', () => {
    const port = server.address().port
    const d = discovery({ bootstrap: [] })
    const dialled = new Set()
    const topic = d.announce(crypto.discoveryKey(o.key), { port, lookup: true })
    topic.on('peer', (p) => {
      const peer = p.host + ':' + p.port
      emit({ event: 'found', peer })
      if (dialled.has(peer)) return
      dialled.add(peer)
      const sock = net.connect(p.port, p.host, () => replicate(sock, true, peer))
      sock.on('error', () => dialled.delete(peer))
    })
    emit({ event: 'ready', port })
    if (o.expectKeys !== null) {
      const check = async () => {
        const k = await keys()
        if (k && k.length >= o.expectKeys) {
          emit({ event: 'done', keys: k })
          process.exit(0)
        }
        setTimeout(check, 50)
      }
      check().catch(fail)
    }
  })
})

process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
