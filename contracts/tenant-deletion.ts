import { defineQuery } from '@temporalio/workflow';
import type { OperationContract } from './operations';

export interface TenantDeletionInput {
  tenantId: string;
  /** The Kubernetes clusters the tenant may have workloads on (LLMHUB_CLUSTERS, process runtimes left out). */
  clusters: string[];
}

export type TenantDeletionPhase = 'removing-workloads' | 'removing-data' | 'deleted' | 'failed';
export interface TenantDeletionStatus {
  phase: TenantDeletionPhase;
  /** Clusters whose tenant namespace (or, in a shared namespace, the tenant's labelled objects) is gone. */
  clustersDone: string[];
  failureReason?: string;
}

export const TenantDeletionFailures = {
  deletionFailed: 'TenantDeletionFailed',
} as const;

/** The one key of a tenant's deletion run: a tenant is deleted once, and a repeated DELETE finds the same run. */
export const TENANT_DELETION_KEY = 'delete';

/**
 * Deletion of a suspended tenant (DELETE /v1/platform/tenants/{id}, operators only): its workloads in every cluster,
 * then its storage and its rows. Not started through a tenant's Idempotency-Key: the claim rows go with the tenant.
 */
export const tenantDeletionContract = {
  kind: 'tenant-deletion',
  workflowType: 'deleteTenant',
  resource: 'tenantDeletion',
  statusQuery: defineQuery<TenantDeletionStatus>('status'),
  terminalPhases: ['deleted', 'failed'],
} as const satisfies OperationContract<TenantDeletionStatus>;
