import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import { messageOf } from './support/failures';
import { trackStatus } from './support/status';
import type { TenantActivities } from '../activities/tenants';
import type { TenantWorkloadActivities } from '../activities/kubernetes/tenant-workloads';
import {
  tenantDeletionContract,
  TenantDeletionFailures,
  type TenantDeletionInput,
  type TenantDeletionStatus,
} from '../contracts/tenant-deletion';

const { removeTenantWorkloads } = proxyActivities<TenantWorkloadActivities>({
  startToCloseTimeout: '30 minutes',
  // Waiting for a namespace to finish terminating heartbeats; a silent worker is retried elsewhere.
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 30 },
});
const { removeTenantData } = proxyActivities<TenantActivities>({
  startToCloseTimeout: '10 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 30 },
});

/**
 * Deletes a tenant: workloads first (so nothing keeps serving or writing), then its storage and rows, which is the
 * step after which the tenant no longer exists. Every step is idempotent, so a retried or repeated run finishes it.
 */
export async function deleteTenant(input: TenantDeletionInput): Promise<void> {
  const status: TenantDeletionStatus = { phase: 'removing-workloads', clustersDone: [] };
  const enter = trackStatus(tenantDeletionContract.statusQuery, status, 'phase');
  enter('removing-workloads');
  try {
    for (const cluster of input.clusters) {
      await removeTenantWorkloads({ cluster, tenantId: input.tenantId });
      status.clustersDone.push(cluster);
    }
    enter('removing-data');
    await removeTenantData(input.tenantId);
    enter('deleted');
  } catch (err) {
    status.failureReason = messageOf(err);
    enter('failed');
    throw ApplicationFailure.nonRetryable(
      `tenant ${input.tenantId} was not fully deleted: ${status.failureReason}`,
      TenantDeletionFailures.deletionFailed,
    );
  }
}
