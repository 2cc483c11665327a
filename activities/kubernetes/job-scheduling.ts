import type { V1PodSpec } from '@kubernetes/client-node';
import type { JobScheduling } from '../../common/config';

const GPU_TOLERATION = { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' };

/**
 * A Job pod's node selector and tolerations: the cluster's own (LLMHUB_CLUSTERS jobScheduling), plus, for a GPU
 * Job, the GPU taint's toleration and the product's label. Empty ones are left out, so a cluster without settings
 * renders the same Jobs as before.
 */
export function jobPlacement(
  scheduling: JobScheduling,
  gpu?: { product?: string },
): Pick<V1PodSpec, 'nodeSelector' | 'tolerations'> {
  const nodeSelector = {
    ...scheduling.nodeSelector,
    ...(gpu?.product ? { 'nvidia.com/gpu.product': gpu.product } : {}),
  };
  const tolerations = [...(scheduling.tolerations ?? []), ...(gpu ? [GPU_TOLERATION] : [])];
  return {
    ...(tolerations.length ? { tolerations } : {}),
    ...(Object.keys(nodeSelector).length ? { nodeSelector } : {}),
  };
}
