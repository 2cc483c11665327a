import { createAutoscalingActivities, type AutoscalingActivityDeps } from './autoscaling';
import { createBatchActivities, type BatchActivityDeps } from './batch';
import { createInferenceActivities, type InferenceActivityDeps } from './inference';
import { createMcpActivities, type McpActivityDeps } from './mcp';
import { createConversionActivities, type ConversionActivityDeps } from './conversion';
import { createFineTuneActivities, type FineTuneActivityDeps } from './fine-tune';
import { createKnowledgeActivities, type KnowledgeActivityDeps } from './knowledge';
import { createKubernetesActivities, type KubernetesActivityDeps } from './kubernetes';
import { createTrainingJobActivities, type TrainingJobDeps } from './kubernetes/jobs';
import { createRegistryActivities, type RegistryActivityDeps } from './registry';
import { createRolloutActivities, type RolloutActivityDeps } from './rollout';
import { createTenantActivities, type TenantActivityDeps } from './tenants';
import { createTenantWorkloadActivities } from './kubernetes/tenant-workloads';

/** Everything the platform task queue's activities need, handed in so tests can pass clients of test servers. */
export interface PlatformActivityDeps
  extends
    RegistryActivityDeps,
    KnowledgeActivityDeps,
    RolloutActivityDeps,
    AutoscalingActivityDeps,
    KubernetesActivityDeps,
    ConversionActivityDeps,
    McpActivityDeps,
    InferenceActivityDeps,
    FineTuneActivityDeps,
    TrainingJobDeps,
    TenantActivityDeps,
    BatchActivityDeps {}

export const createPlatformActivities = (deps: PlatformActivityDeps) => ({
  ...createRegistryActivities(deps),
  ...createKnowledgeActivities(deps),
  ...createRolloutActivities(deps),
  ...createAutoscalingActivities(deps),
  ...createKubernetesActivities(deps),
  ...createConversionActivities(deps),
  ...createFineTuneActivities(deps),
  ...createTrainingJobActivities(deps),
  ...createMcpActivities(deps),
  ...createInferenceActivities(deps),
  ...createTenantWorkloadActivities(deps),
  ...createTenantActivities(deps),
  ...createBatchActivities(deps),
});
