export * from './ingestion';
export * from './model-registry';
export * from './rollout';
export * from './agent-run';
