/** Domain types of the platform store shared by the API and the activities (plain data). */

import type { Role } from '../contracts/approvals';
import type { ServingResources } from '../contracts/rollout';

/** Who is calling: resolved from an API key or a JWT, always scoped to one tenant. */
export interface Principal {
  tenantId: string;
  subject: string;
  roles: Role[];
  via: 'api_key' | 'jwt';
  /** Set when a batch's workflow calls the gateway for its creator (a service credential): its traffic's own share. */
  batchId?: string;
}

/**
 * A platform operator: a member of no tenant, so it reaches no tenant's objects, and only it may run the
 * `/v1/platform/*` routes (tenants, quotas, ceilings, storage scope, the MCP catalog).
 */
export interface PlatformOperator {
  subject: string;
  via: 'platform_key' | 'jwt';
}

/** What a model is and needs; null where its creator did not say. */
export interface ModelMetadata {
  type: 'chat' | 'completion' | 'embedding' | null;
  contextLength: number | null;
  parameterCount: number | null;
  precision: 'fp32' | 'fp16' | 'bf16' | 'fp8' | 'int8' | 'int4' | null;
  /** What one serving replica requests; POST /v1/deploy uses it when its body names none. */
  resources: ServingResources | null;
}

export interface Model extends ModelMetadata {
  id: string;
  name: string;
  description: string;
  createdAt: string;
}

export type ModelVersionState = 'registering' | 'ready' | 'failed';

export interface ModelVersion {
  modelId: string;
  version: string;
  artifactUri: string;
  state: ModelVersionState;
  sizeBytes: number | null;
  checksum: string | null;
  etag: string | null;
  failureReason: string | null;
  workflowId: string;
  createdAt: string;
  updatedAt: string;
}
