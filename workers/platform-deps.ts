import type { Pool } from 'pg';
import type { PlatformActivityDeps } from '../activities';
import { createUnstructuredParser } from '../activities/parsing/unstructured';
import type { Config } from '../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../common/knowledge';
import { s3StoreFromConfig } from '../common/objectstore';
import { KnowledgeStore } from '../common/store/knowledge';
import { RegistryStore } from '../common/store/registry';

/** The real clients behind the platform activities, from configuration; tests override single parts. */
export async function platformActivityDeps(config: Config, db: Pool, overrides: Partial<PlatformActivityDeps> = {}): Promise<PlatformActivityDeps> {
  return {
    registry: new RegistryStore(db),
    objects: s3StoreFromConfig(config),
    knowledge: new KnowledgeStore(db),
    vectors: await vectorStoreFromConfig(config),
    embedders: new EmbedderRegistry(config),
    platformBucket: config.PLATFORM_BUCKET,
    ...(config.UNSTRUCTURED_API_URL ? { unstructured: createUnstructuredParser(config.UNSTRUCTURED_API_URL, config.UNSTRUCTURED_API_KEY) } : {}),
    ...overrides,
  };
}
