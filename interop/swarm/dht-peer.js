#!/usr/bin/env node
'use strict'
// A JS hyperswarm 2 DHT peer (@hyperswarm/dht 4.0.1 on dht-rpc 4.9.6), for
// kappa-rs DHT interop tests. Everything binds and talks to 127.0.0.1 only, or
// to the address in DHT_HOST (a test host's address in a network namespace).
//
// usage: node dht-peer.js node [BOOTSTRAP_PORT]        a full (non-ephemeral) DHT node;
//                                                     without a port, the first (bootstrap) node
//        node dht-peer.js announce BOOTSTRAP_PORT TOPIC_HEX64 PORT
//        node dht-peer.js lookup BOOTSTRAP_PORT TOPIC_HEX64
// Prints {"port": P} once listening (node), "announced" after each announce run,
// "found HOST:PORT" for each peer a lookup or announce run returns. Lookups and
// announces run again every 500 ms. Exits when stdin closes.
const dht = require('@hyperswarm/dht')

const [mode, bootArg, topicHex, portArg] = process.argv.slice(2)
if (!/^(node|announce|lookup)$/.test(mode || '')) {
  console.error('usage: see the comment at the top of dht-peer.js')
  process.exit(2)
}
const host = process.env.DHT_HOST || '127.0.0.1'
const bootHost = process.env.DHT_BOOTSTRAP_HOST || host
const bootstrap = bootArg ? [bootHost + ':' + Number(bootArg)] : []
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()

if (mode === 'node') {
  const node = dht({ bootstrap, ephemeral: false })
  node.on('warning', (err) => console.error('dht warning', err.message))
  node.listen(0, host, () => console.log(JSON.stringify({ port: node.address().port })))
} else {
  const topic = Buffer.from(topicHex, 'hex')
  const port = Number(portArg || 0)
  const node = dht({ bootstrap, ephemeral: true })
  node.on('warning', (err) => console.error('dht warning', err.message))
  node.listen(0, host, () => {
    const loop = () => {
      const s = mode === 'announce' ? node.announce(topic, { port }) : node.lookup(topic)
      s.on('data', (data) => {
        for (const p of data.peers || []) console.log('found ' + p.host + ':' + p.port)
      })
      s.on('error', (err) => console.error('run error', err.message))
      s.on('end', () => {
        if (mode === 'announce') console.log('announced')
        setTimeout(loop, 500)
      })
    }
    loop()
  })
}
