import type { V1PodSpec } from '@kubernetes/client-node';
import type { PodPlacement } from '../../common/config';

const GPU_TOLERATION = { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' };

/**
 * A pod's node selector and tolerations: the cluster's own (LLMHUB_CLUSTERS nodeSelector, tolerations), plus, for a
 * GPU pod, the GPU taint's toleration and the product's label. Empty ones are left out, so a cluster without settings
 * renders the same pods as before.
 */
export function podPlacement(
  placement: PodPlacement,
  gpu?: { product?: string },
): Pick<V1PodSpec, 'nodeSelector' | 'tolerations'> {
  const nodeSelector = {
    ...placement.nodeSelector,
    ...(gpu?.product ? { 'nvidia.com/gpu.product': gpu.product } : {}),
  };
  const tolerations = [...(placement.tolerations ?? []), ...(gpu ? [GPU_TOLERATION] : [])];
  return {
    ...(tolerations.length ? { tolerations } : {}),
    ...(Object.keys(nodeSelector).length ? { nodeSelector } : {}),
  };
}
