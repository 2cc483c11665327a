import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { AppsV1Api, BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { ClusterFailures } from '../../contracts/cluster';
import { isStatus } from './client';
import type { KubernetesActivityDeps } from '.';
import { defaultNamespaceOf, Labels, labelValue } from './manifests';

/** How often a terminating namespace is looked at; the activity heartbeats each time. */
const NAMESPACE_POLL_MS = 1000;

/**
 * Removes what a tenant runs on one cluster. Its own namespace (`llmhub-<tenant>`) is deleted whole and awaited
 * until the API server has finalised it. A namespace configuration maps the tenant to may be shared, so there only the
 * objects labelled with the tenant (serving Deployments and Services, Jobs, Secrets labelled for it) are deleted.
 */
export const createTenantWorkloadActivities = (deps: Pick<KubernetesActivityDeps, 'kubeConfigOf' | 'namespaceOf'>) => ({
  async removeTenantWorkloads({ cluster, tenantId }: { cluster: string; tenantId: string }): Promise<void> {
    const kc = deps.kubeConfigOf(cluster);
    if (!kc)
      throw ApplicationFailure.nonRetryable(`cluster '${cluster}' is not configured`, ClusterFailures.unknownCluster);
    const core = kc.makeApiClient(CoreV1Api);
    const namespace = deps.namespaceOf(tenantId);
    if (namespace === defaultNamespaceOf(tenantId)) {
      try {
        await core.deleteNamespace({ name: namespace });
      } catch (err) {
        if (isStatus(err, 404)) return;
        throw err;
      }
      for (;;) {
        Context.current().heartbeat();
        try {
          await core.readNamespace({ name: namespace });
        } catch (err) {
          if (isStatus(err, 404)) return;
          throw err;
        }
        await Context.current().sleep(NAMESPACE_POLL_MS);
      }
    }
    const labelSelector = `${Labels.tenant}=${labelValue(tenantId)}`;
    const apps = kc.makeApiClient(AppsV1Api);
    const batch = kc.makeApiClient(BatchV1Api);
    await apps.deleteCollectionNamespacedDeployment({ namespace, labelSelector });
    await core.deleteCollectionNamespacedService({ namespace, labelSelector });
    await batch.deleteCollectionNamespacedJob({ namespace, labelSelector, propagationPolicy: 'Background' });
    await core.deleteCollectionNamespacedSecret({ namespace, labelSelector });
  },
});

export type TenantWorkloadActivities = ReturnType<typeof createTenantWorkloadActivities>;
