'use strict'
// Makes the kappa-core 6 interop scripts in interop/ run on the kappa-core 7 stack pinned
// here (kappa-core 7.0.0, multifeed 6.0.0, hypercore 9.12.0, hypercore-protocol 8.0.7,
// noise-protocol 3.0.1): every bare `require('pkg')` made by a file of interop/ outside any
// node_modules resolves from interop/kc7/node_modules instead of interop/node_modules.
// Packages resolve their own dependencies as usual (from their own location), so the two
// stacks never mix. Relative requires (./lib/common) are untouched.
//
// Usage (the first line of a kc7 wrapper script): require('./lib/stack'); then require the
// kc6 script, e.g. require('../../multifeed-peer.js').

const Module = require('module')
const path = require('path')

const INTEROP = path.resolve(__dirname, '..', '..')
const KC7_MODULES = path.resolve(__dirname, '..', 'node_modules')
const SEP = path.sep

const original = Module._resolveFilename
Module._resolveFilename = function (request, parent, isMain, options) {
  const from = parent && parent.filename
  const bare = !request.startsWith('.') && !path.isAbsolute(request) && !request.startsWith('node:') &&
    !Module.builtinModules.includes(request)
  if (bare && from && from.startsWith(INTEROP + SEP) && !from.includes(SEP + 'node_modules' + SEP)) {
    return original.call(this, request, parent, isMain, { paths: [KC7_MODULES] })
  }
  return original.call(this, request, parent, isMain, options)
}

// Which generation this process speaks, for reports.
module.exports = {
  generation: 'kappa-core 7',
  versions: () => {
    const v = (p) => require(path.join(KC7_MODULES, p, 'package.json')).version
    return {
      'kappa-core': v('kappa-core'),
      multifeed: v('multifeed'),
      hypercore: v('hypercore'),
      'hypercore-protocol': v('hypercore-protocol'),
      'noise-protocol': v('noise-protocol')
    }
  }
}
