export * from './ingestion';
export * from './model-registry';
export * from './rollout';
export * from './conversion';
export * from './agent-run';
export * from './fine-tune';
export * from './pipeline';
export * from './mcp-discovery';
