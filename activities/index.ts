import type { EmbedderRegistry } from '../common/knowledge';
import type { ObjectStore } from '../common/objectstore';
import type { KnowledgeStore } from '../common/store/knowledge';
import type { RegistryStore } from '../common/store/registry';
import type { VectorStore } from '../common/vectors';
import { createKnowledgeActivities } from './knowledge';
import type { Block } from './parsing/parsers';
import { createRegistryActivities } from './registry';

/** Everything the platform task queue's activities need, handed in so tests can pass clients of test servers. */
export interface PlatformActivityDeps {
  registry: RegistryStore;
  objects: ObjectStore;
  knowledge: KnowledgeStore;
  vectors: VectorStore;
  embedders: EmbedderRegistry;
  platformBucket: string;
  unstructured?: (name: string, bytes: Uint8Array) => Promise<Block[]>;
}

export const createPlatformActivities = (deps: PlatformActivityDeps) => ({
  ...createRegistryActivities(deps),
  ...createKnowledgeActivities(deps),
});
