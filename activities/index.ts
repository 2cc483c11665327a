import { createKnowledgeActivities, type KnowledgeActivityDeps } from './knowledge';
import { createRegistryActivities, type RegistryActivityDeps } from './registry';

/** Everything the platform task queue's activities need, handed in so tests can pass clients of test servers. */
export interface PlatformActivityDeps extends RegistryActivityDeps, KnowledgeActivityDeps {}

export const createPlatformActivities = (deps: PlatformActivityDeps) => ({
  ...createRegistryActivities(deps),
  ...createKnowledgeActivities(deps),
});
