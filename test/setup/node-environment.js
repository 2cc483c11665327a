// Native addons (onnxruntime-node, lancedb) create typed arrays in Node's own realm, while code under test runs
// in jest's sandbox realm, so `x instanceof Float32Array` fails across the boundary. Sharing the outer realm's
// typed-array constructors makes the sandbox behave like the single realm the code runs in in production.
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'ArrayBuffer',
  'SharedArrayBuffer',
  'DataView',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'Float32Array',
  'Float64Array',
  'BigInt64Array',
  'BigUint64Array',
];

class SharedRealmEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }
}

module.exports = SharedRealmEnvironment;
