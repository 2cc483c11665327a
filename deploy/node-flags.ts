/**
 * Node flags the API process (gateway included) runs with, in dev and in production (NODE_OPTIONS in its container),
 * and in the gateway benchmark: a heap budget, as a container would give it. Without one, Node 24 on a large machine
 * gives the young generation 2 × 64 MB and lets the old generation grow several-fold between full collections; each
 * open stream's state lives long enough to be promoted, so with 1,000 streams open RSS climbed from 290 to 440 MiB
 * in 90 s (a plain node:http proxy: 180 to 300). With this budget V8 collects the old generation every 15-20 s under
 * that load and RSS stays level (247-266 MiB over 90 s). The cost: a full collection now and then under plain
 * request traffic too, pausing the process 7-23 ms. Request bodies (uploads up to 50 MB) are Buffers outside this heap.
 */
export const API_NODE_FLAGS = ['--max-old-space-size=512', '--max-semi-space-size=16'];
