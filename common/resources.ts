import { Type, type Static } from '@sinclair/typebox';
import type { ServingResources } from '../contracts/rollout';

// Kubernetes quantities, kept to the forms people write for CPU and memory.
export const Cpu = Type.Union(
  [
    Type.Number({ exclusiveMinimum: 0, maximum: 512 }),
    // More than zero, as the pattern says: a schema-valid value is never refused.
    Type.String({
      pattern: '^(?:[1-9][0-9]{0,5}m|[1-9][0-9]{0,2}(?:\\.[0-9]{1,3})?|0\\.(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$',
    }),
  ],
  {
    description: 'cores (2, 0.5) or millicores ("500m")',
  },
);
/** What a resources object that names no memory gets. */
const DEFAULT_MEMORY = '16Gi';
export const Memory = Type.String({ pattern: '^[1-9][0-9]{0,5}(Mi|Gi|Ti)$', default: DEFAULT_MEMORY });
const Gpu = Type.Integer({
  minimum: 0,
  maximum: 16,
  description:
    "GPUs per replica, claimed from the tenant's GPU quota; past it the rollout ends rolled_back with nothing applied",
});

/** What one serving replica requests: the deploy body's `resources` and a model's resource requirements. */
export const Resources = Type.Object(
  { cpu: Cpu, gpu: Gpu, memory: Type.Optional(Memory) },
  { additionalProperties: false },
);
export type ResourcesBody = Static<typeof Resources>;

/** A cluster's `defaultResources` in LLMHUB_CLUSTERS: each field left out is the platform's. */
export const PartialResources = Type.Partial(Resources);
export type PartialResourcesBody = Static<typeof PartialResources>;

/** What a deployment gets when neither its body, its model nor its cluster says: one core, 4Gi, no GPU. */
export const PLATFORM_DEFAULT_RESOURCES: ServingResources = { cpu: '1', gpu: 0, memory: '4Gi' };

export const toCores = (cpu: number | string): number =>
  typeof cpu === 'number' ? cpu : cpu.endsWith('m') ? Number(cpu.slice(0, -1)) / 1000 : Number(cpu);

/** The stored and answered form: CPU as a Kubernetes quantity string, memory always named. */
export const servingResourcesOf = (r: ResourcesBody): ServingResources => ({
  cpu: String(r.cpu),
  gpu: r.gpu,
  memory: r.memory ?? DEFAULT_MEMORY,
});

/**
 * The resources a deployment runs with: the body's, else the model's requirements, else the cluster's default over
 * the platform's. Whole objects, not merged field by field: a model's requirements are one judgement.
 */
export function resolveResources(
  body: ResourcesBody | undefined,
  model: ServingResources | null | undefined,
  cluster: PartialResourcesBody | undefined,
): ServingResources {
  if (body) return servingResourcesOf(body);
  if (model) return model;
  const d = { ...PLATFORM_DEFAULT_RESOURCES, ...cluster };
  return { cpu: String(d.cpu), gpu: d.gpu, memory: d.memory };
}
