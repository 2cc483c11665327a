export * from './ingestion';
export * from './model-registry';
export * from './rollout';
