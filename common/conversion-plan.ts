/**
 * What a conversion is keyed by, computed in one place: the API does it before starting a conversion, the
 * pipeline's activity once the fine-tune has produced the version (it does not exist when the pipeline starts).
 */
import { canonicalHash } from './canonical';
import {
  DEFAULT_TOLERANCE,
  type ConversionInput,
  type ConversionOptions,
  type ConversionTarget,
} from '../contracts/conversion';
import { conversionToolchainVersion } from './conversion-toolchain';
import { ConflictError, NotFoundError } from './errors';
import type { RegistryStore } from './store/registry';

/** A request's conversion options as clients send them (POST /v1/conversions, a pipeline's `conversion`). */
export interface ConversionRequestOptions {
  targets: ConversionTarget[];
  precision?: 'fp32' | 'fp16';
  validation?: {
    samples?: number[][];
    sampleCount?: number;
    seed?: number;
    tolerance?: Partial<Record<ConversionTarget, number>>;
  };
  profile?: { runs?: number; batch?: number };
}

/** The request's options with every default filled in and targets sorted: what the memo key hashes. */
export function conversionOptionsOf(body: ConversionRequestOptions): ConversionOptions {
  const targets = [...body.targets].sort();
  const v = body.validation ?? {};
  return {
    targets,
    precision: body.precision ?? 'fp16',
    validation: {
      ...(v.samples ? { samples: v.samples } : {}),
      sampleCount: v.samples ? v.samples.length : (v.sampleCount ?? 32),
      seed: v.seed ?? 0,
      tolerance: Object.fromEntries(targets.map((t) => [t, v.tolerance?.[t] ?? DEFAULT_TOLERANCE[t]])),
    },
    profile: { runs: body.profile?.runs ?? 100, batch: body.profile?.batch ?? 1 },
  };
}

export interface ConversionPlanRequest {
  tenantId: string;
  conversionId: string;
  workflowId: string;
  modelId: string;
  /** Default: the newest ready version. */
  version?: string;
  cluster: string;
  options: ConversionOptions;
}

/**
 * Resolves the version (it must be ready and have a checksum) and computes the memo key of (artifact, options,
 * toolchain, cluster). Throws the platform's 404/409 errors naming `versionField` for a missing or unready version.
 */
export async function conversionInputOf(
  registry: RegistryStore,
  r: ConversionPlanRequest,
  versionField = 'body.version',
): Promise<ConversionInput> {
  if (!(await registry.getModel(r.tenantId, r.modelId))) throw new NotFoundError('model', r.modelId);
  const versions = await registry.listVersions(r.tenantId, r.modelId);
  const version = r.version ?? versions.filter((v) => v.state === 'ready').at(-1)?.version;
  if (version === undefined)
    throw new ConflictError(`model '${r.modelId}' has no ready version to convert`, { field: versionField });
  const found = versions.find((v) => v.version === version);
  if (!found) throw new NotFoundError('version', `${r.modelId}@${version}`);
  if (found.state !== 'ready' || !found.checksum)
    throw new ConflictError(`version '${version}' is ${found.state}; only a ready version converts`, {
      field: versionField,
    });
  const toolchainVersion = conversionToolchainVersion();
  return {
    tenantId: r.tenantId,
    conversionId: r.conversionId,
    workflowId: r.workflowId,
    modelId: r.modelId,
    version,
    artifactUri: found.artifactUri,
    artifactChecksum: found.checksum,
    memoKey: canonicalHash({ artifact: found.checksum, options: r.options, toolchainVersion, cluster: r.cluster }),
    toolchainVersion,
    cluster: r.cluster,
    options: r.options,
  };
}

/** What the conversion row claim (ConversionStore.claim) records for an input. */
export const conversionClaimOf = (i: ConversionInput) => ({
  conversionId: i.conversionId,
  workflowId: i.workflowId,
  modelId: i.modelId,
  version: i.version,
  memoKey: i.memoKey,
  toolchainVersion: i.toolchainVersion,
  options: i.options,
});
