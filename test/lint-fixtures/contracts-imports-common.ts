// lint-as: contracts/example.ts
import type { RolloutStatus } from '../common/rollout';

export type Status = RolloutStatus;
