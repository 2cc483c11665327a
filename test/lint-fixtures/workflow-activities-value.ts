// lint-as: workflows/example.ts
import { createRolloutActivities } from '../activities/rollout';

export const factory = createRolloutActivities;
