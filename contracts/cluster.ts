/** Failure types of the cluster activities (Kubernetes or the local process runtime), shared by every operation that runs pods. */
export const ClusterFailures = {
  readinessTimeout: 'ReadinessTimeout',
  invalidManifest: 'InvalidManifest',
  unknownCluster: 'UnknownCluster',
  /** A version has no address the gateway can reach (LLMHUB_LOCAL_ENDPOINTS has no entry for it). */
  noEndpoint: 'NoEndpoint',
} as const;
