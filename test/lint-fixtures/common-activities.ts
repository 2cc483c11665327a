// lint-as: common/example.ts
// Even a type: common/ is the bottom layer.
import type { RolloutActivities } from '../activities/rollout';

export type Activities = RolloutActivities;
