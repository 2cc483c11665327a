import { defineQuery } from '@temporalio/workflow';
import type { OperationContract } from './operations';

/** Input of the model-version registration workflow: references only, never secrets or file contents. */
export interface RegisterModelVersionInput {
  tenantId: string;
  modelId: string;
  version: string;
  artifactUri: string;
}

export interface ArtifactInfo {
  sizeBytes: number;
  checksum: string;
  etag: string | null;
}
export type RegistrationPhase = 'inspecting' | 'recording' | 'ready' | 'failed';
export interface RegistrationStatus {
  phase: RegistrationPhase;
  artifact?: ArtifactInfo;
  failureReason?: string;
}

export const RegistryFailures = {
  artifactNotFound: 'ArtifactNotFound',
  invalidArtifactUri: 'InvalidArtifactUri',
  registrationFailed: 'RegistrationFailed',
} as const;

/** Registration of one model version (POST /v1/models/{id}/versions): HEAD and hash the artifact, then record it. */
export const modelRegistryContract = {
  kind: 'model-version',
  workflowType: 'registerModelVersion',
  resource: 'version',
  statusQuery: defineQuery<RegistrationStatus>('status'),
  terminalPhases: ['ready', 'failed'],
} as const satisfies OperationContract<RegistrationStatus>;
