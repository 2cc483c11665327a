/** Domain types of the platform store shared by the API and the activities (plain data). */

import type { Role } from '../contracts/approvals';

/** Who is calling: resolved from an API key or a JWT, always scoped to one tenant. */
export interface Principal {
  tenantId: string;
  subject: string;
  roles: Role[];
  via: 'api_key' | 'jwt';
}

/**
 * A platform operator: a member of no tenant, so it reaches no tenant's objects, and only it may run the
 * `/v1/platform/*` routes (tenants, quotas, ceilings, storage scope, the MCP catalog).
 */
export interface PlatformOperator {
  subject: string;
  via: 'platform_key' | 'jwt';
}

export interface Model {
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
