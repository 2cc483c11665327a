import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** `node` arguments that make a process write the modules it loaded to `file` at exit (loaded-modules.cjs). */
export const recordModules = (file: string) => ({
  args: ['--require', path.join(__dirname, 'loaded-modules.cjs')],
  env: { LLMHUB_LOADED_MODULES: file },
});

/** The paths or URLs of the modules a process recorded with `recordModules` loaded. */
export const loadedModules = async (file: string) => (await readFile(file, 'utf8')).split('\n').filter(Boolean);

/** Modules the gateway loads: the list holds these, or it is not the gateway's. */
export const GATEWAY_NEEDS = [
  /\/api\/gateway\/plugin\.(ts|js)$/,
  /\/api\/routes\/model-list\.(ts|js)$/,
  /\/node_modules\/fastify\//,
  /\/node_modules\/pg\//,
];

/**
 * What the gateway role must not load: the knowledge, parsing, conversion, Kubernetes and object storage code, the
 * Temporal client and worker (gRPC, protobufs, the native bridge), and the control routes. The workflow SDK that
 * contracts/ defines its message names with is small and stays.
 */
export const GATEWAY_MUST_NOT_LOAD = [
  /\/node_modules\/(@temporalio\/(client|worker|proto|core-bridge|testing)|@grpc\/grpc-js)\//,
  /\/node_modules\/(@lancedb|@qdrant|onnxruntime-node|@huggingface\/tokenizers|apache-arrow)\//,
  /\/node_modules\/(unpdf|mammoth|html-to-text|marked|unstructured-client)\//,
  /\/node_modules\/(@aws-sdk|@smithy|@kubernetes\/client-node|@modelcontextprotocol|@fastify\/swagger)/,
  /\/(activities|workflows)\//,
  /\/common\/(knowledge|vectors\/|embeddings\/|documents|conversion-|objectstore|storage-admin|mcp|kube)/,
  /\/api\/(app|operations|operation-routes|mcp-discovery)\.(ts|js)$/,
  /\/api\/routes\/(?!health\.(ts|js)$|model-list\.(ts|js)$)/,
];
