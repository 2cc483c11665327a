import { ApplicationFailure, CancellationScope, proxyActivities } from '@temporalio/workflow';
import { messageOf } from './support/failures';
import { trackStatus } from './support/status';
import type { RegistryActivities } from '../activities/registry';
import {
  modelRegistryContract,
  RegistryFailures,
  type ArtifactInfo,
  type RegisterModelVersionInput,
  type RegistrationStatus,
} from '../contracts/model-registry';

const { inspectArtifact } = proxyActivities<RegistryActivities>({
  startToCloseTimeout: '30 minutes',
  // Hashing a large artifact heartbeats; a silent worker is retried elsewhere within a minute.
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '15 seconds',
    maximumAttempts: 20,
    nonRetryableErrorTypes: [RegistryFailures.artifactNotFound, RegistryFailures.invalidArtifactUri],
  },
});
const { markVersionReady, markVersionFailed } = proxyActivities<RegistryActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 50 },
});

/** Registers one model version: verify the artifact in object storage, then record its facts in the registry. */
export async function registerModelVersion(input: RegisterModelVersionInput): Promise<ArtifactInfo> {
  const status: RegistrationStatus = { phase: 'inspecting' };
  const enter = trackStatus(modelRegistryContract.statusQuery, status, 'phase');
  enter('inspecting');
  try {
    const artifact = await inspectArtifact(input.artifactUri, input.tenantId);
    status.artifact = artifact;
    enter('recording');
    await markVersionReady(input, artifact);
    enter('ready');
    return artifact;
  } catch (err) {
    const reason = messageOf(err);
    status.failureReason = reason;
    // Even a cancelled run must leave the registry row saying what happened to it.
    await CancellationScope.nonCancellable(() => markVersionFailed(input, reason));
    enter('failed');
    throw ApplicationFailure.nonRetryable(
      `model version ${input.modelId}@${input.version} was not registered: ${reason}`,
      RegistryFailures.registrationFailed,
    );
  }
}
