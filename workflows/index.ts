export * from './ingestion';
export * from './model-registry';
