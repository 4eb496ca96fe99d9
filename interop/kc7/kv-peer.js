#!/usr/bin/env node
'use strict'
// ../kv-peer.js on the kappa-core 7 stack (hypercore 9.12.0, hypercore-protocol 8.0.7,
// multifeed 6.0.0, kappa-core 7.0.0); same arguments and output. See lib/stack.js.
require('./lib/stack')
require('../kv-peer.js')
