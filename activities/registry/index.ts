import { Context } from '@temporalio/activity';
import { type ArtifactInfo, type RegisterModelVersionInput, RegistryFailures } from '../../contracts/model-registry';
import { ApplicationFailure } from '@temporalio/common';
import { InvalidObjectUriError, parseObjectUri, sha256Of, type ObjectStore } from '../../common/objectstore';
import type { RegistryStore } from '../../common/store/registry';
import type { StorageScopeStore } from '../../common/store/storage-scope';
import { requireInScope } from '../storage/scope';

export interface RegistryActivityDeps {
  registry: RegistryStore;
  objects: ObjectStore;
  storageScopes: StorageScopeStore;
}

export const createRegistryActivities = ({ registry, objects, storageScopes }: RegistryActivityDeps) => ({
  /**
   * HEADs the artifact and records its size and SHA-256 (from S3's stored checksum, else by streaming it). The
   * artifact must lie in the tenant's storage scope, checked before any S3 call (a run recorded before the tenant was
   * passed names none, and is refused).
   */
  async inspectArtifact(artifactUri: string, tenantId?: string): Promise<ArtifactInfo> {
    let ref;
    try {
      ref = parseObjectUri(artifactUri);
    } catch (err) {
      if (err instanceof InvalidObjectUriError)
        throw ApplicationFailure.nonRetryable(err.message, RegistryFailures.invalidArtifactUri);
      throw err;
    }
    await requireInScope(storageScopes, tenantId, [artifactUri]);
    const head = await objects.head(ref);
    if (!head) {
      throw ApplicationFailure.nonRetryable(
        `artifact ${artifactUri} does not exist in object storage`,
        RegistryFailures.artifactNotFound,
        {
          artifactUri,
        },
      );
    }
    const ctx = Context.current();
    const checksum = await sha256Of(objects, ref, head, (bytes) =>
      ctx.heartbeat({ hashedBytes: bytes, totalBytes: head.sizeBytes }),
    );
    return { sizeBytes: head.sizeBytes, checksum: `sha256:${checksum}`, etag: head.etag };
  },

  async markVersionReady(input: RegisterModelVersionInput, info: ArtifactInfo): Promise<void> {
    await registry.markVersionReady(input.tenantId, input.modelId, input.version, info);
  },

  async markVersionFailed(input: RegisterModelVersionInput, reason: string): Promise<void> {
    await registry.markVersionFailed(input.tenantId, input.modelId, input.version, reason);
  },
});

export type RegistryActivities = ReturnType<typeof createRegistryActivities>;
