// Prints dht-rpc 4 and @hyperswarm/dht 4 message encodings made by the real JS
// packages, as JSON, for kappa-discovery's wire tests
// (crates/kappa-discovery/tests/vectors/dht.json).
const { Message } = require('dht-rpc/lib/messages')
const { PeersInput, PeersOutput } = require('@hyperswarm/dht/messages')
const peers = require('ipv4-peers')
const nodes = peers.idLength(32)

const id = Buffer.alloc(32, 0xab)
const topic = Buffer.alloc(32, 0x42)
const token = Buffer.alloc(32, 0x07)
const hex = (b) => Buffer.from(b).toString('hex')
const out = []
const msg = (name, m) => out.push({ name, kind: 'message', hex: hex(Message.encode(m)) })

msg('ping query from an ephemeral node', { version: 1, type: 1, rid: 1234, to: peers.encode([{ host: '127.0.0.1', port: 49737 }]), command: '_ping' })
msg('find_node query', { version: 1, type: 1, rid: 65535, to: peers.encode([{ host: '10.0.0.2', port: 1 }]), target: topic, command: '_find_node' })
msg('peers lookup query', { version: 1, type: 1, rid: 7, to: peers.encode([{ host: '10.1.2.3', port: 40000 }]), target: topic, command: 'peers', value: PeersInput.encode({}) })
msg('peers announce update', { version: 1, type: 2, rid: 8, to: peers.encode([{ host: '10.1.2.3', port: 40000 }]), roundtripToken: token, target: topic, command: 'peers', value: PeersInput.encode({ port: 7000 }) })
msg('peers unannounce update', { version: 1, type: 2, rid: 9, roundtripToken: token, target: topic, command: 'peers', value: PeersInput.encode({ port: 7000, unannounce: true }) })
msg('response with closer nodes and a value', {
  version: 1,
  type: 3,
  rid: 7,
  to: peers.encode([{ host: '10.1.2.3', port: 40000 }]),
  id,
  closerNodes: nodes.encode([{ id, host: '10.0.0.9', port: 49737 }, { id: topic, host: '192.168.1.1', port: 65535 }]),
  roundtripToken: token,
  value: PeersOutput.encode({ peers: peers.encode([{ host: '10.0.0.5', port: 7000 }, { host: '10.0.0.6', port: 7001 }]) })
})
msg('error response', { version: 1, type: 3, rid: 3, id, error: 'Unsupported command' })
msg('message of an old version', { type: 1, rid: 0, id, command: '_ping' })
out.push({ name: 'peers input with a local address', kind: 'peers-input', hex: hex(PeersInput.encode({ port: 7000, localAddress: peers.encode([{ host: '192.168.1.20', port: 7000 }]) })) })
out.push({ name: 'peers output, local peers only', kind: 'peers-output', hex: hex(PeersOutput.encode({ localPeers: Buffer.from([1, 20, 0x1b, 0x58]) })) })
console.log(JSON.stringify(out, null, 2))
