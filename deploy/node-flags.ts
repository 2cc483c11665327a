/**
 * Node flags the API process (gateway included) runs with, in dev and in production (NODE_OPTIONS in its container),
 * and in the gateway benchmark. A heap budget, as a container would give it: without one, Node 24 on a large machine
 * sizes the young generation at 2 × 64 MB and lets the old generation grow several-fold between full collections, so
 * with 1,000 streams open RSS climbed from 290 to 440 MiB in 90 s (a plain node:http proxy: 180 to 300). Each open
 * stream's state lives long enough to be promoted, and V8 only collects it at its next full GC. With this budget
 * V8 collects the old generation every 15-20 s under that load and RSS stays level (250-275 MiB).
 * Request bodies (uploads up to 50 MB) are Buffers outside this heap.
 */
export const API_NODE_FLAGS = ['--max-old-space-size=512', '--max-semi-space-size=16'];
