import type { ObjectStore } from '../common/objectstore';
import type { RegistryStore } from '../common/store/registry';
import { createRegistryActivities } from './registry';

/** Everything the platform task queue's activities need, handed in so tests can pass clients of test servers. */
export interface PlatformActivityDeps {
  registry: RegistryStore;
  objects: ObjectStore;
}

export const createPlatformActivities = (deps: PlatformActivityDeps) => ({
  ...createRegistryActivities(deps),
});
