#!/usr/bin/env node
'use strict'
// A JS hyperswarm 2 LAN discovery peer (@hyperswarm/discovery 2.0.1 over multicast-dns 7),
// for kappa-rs discovery interop tests in network namespaces.
//
// usage: node peer.js announce|lookup|both TOPIC_HEX64 [PORT]
//   announce: discovery.announce(topic, {port}) (answers queries; one unasked answer at start)
//   lookup:   discovery.lookup(topic) (queries at once, then every 30-60 s)
//   both:     discovery.announce(topic, {port, lookup: true}), as hyperswarm 2's join does
// Prints "ready", then "found HOST:PORT" for each peer event. Exits when stdin closes.
// The DHT half is given no bootstrap nodes, so nothing is sent beyond the LAN.
const discovery = require('@hyperswarm/discovery')

const [mode, topicHex, portArg] = process.argv.slice(2)
if (!/^(announce|lookup|both)$/.test(mode || '') || !/^[0-9a-f]{64}$/.test(topicHex || '')) {
  console.error('usage: node peer.js announce|lookup|both TOPIC_HEX64 [PORT]')
  process.exit(2)
}
const topic = Buffer.from(topicHex, 'hex')
const port = Number(portArg || 0)
const d = discovery({ bootstrap: [] })
d.on('error', (err) => { console.error('discovery error', err); process.exit(1) })
d.mdns.on('warning', (err) => console.error('mdns warning', err.message))

const t = mode === 'lookup'
  ? d.lookup(topic)
  : d.announce(topic, { port, lookup: mode === 'both' })
t.on('peer', (peer) => console.log('found ' + peer.host + ':' + peer.port))
console.log('ready')

process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
