import { ApplicationFailure } from '@temporalio/common';
import { ClusterFailures } from '../../contracts/cluster';

/** Where one served version's Service is, as the rollout knows it after applying it. */
export interface ServedVersion {
  cluster: string;
  tenantId: string;
  modelId: string;
  version: string;
  namespace: string;
  service: string;
  port: number;
  /** The Service's ClusterIP as the API server allocated it. */
  clusterIP?: string;
}

/**
 * THE one place that turns a served version into the gateway's upstream URL (…/v1).
 * A real cluster answers with the Service's DNS name. The local control plane runs no containers (kwok) and its
 * API server refuses Endpoints on loopback, so dev and tests map each version to a local reference model server.
 */
export type EndpointResolver = (v: ServedVersion) => string;

export const serviceDnsEndpoints: EndpointResolver = (v) => `http://${v.service}.${v.namespace}.svc:${v.port}/v1`;

/**
 * The Service's ClusterIP, for a gateway that routes the cluster's Service range but does not resolve its DNS (the local
 * real node: kube-proxy answers the ClusterIPs from the host). A ClusterIP stays the same while pods come and go, and
 * kube-proxy sends to Ready pods only, so the URL the route keeps needs no update when a pod restarts or moves.
 */
export const clusterIpEndpoints: EndpointResolver = (v) => {
  if (!v.clusterIP || v.clusterIP === 'None')
    throw ApplicationFailure.nonRetryable(
      `Service ${v.namespace}/${v.service} has no ClusterIP`,
      ClusterFailures.noEndpoint,
    );
  return `http://${v.clusterIP}:${v.port}/v1`;
};

/** The dev stack's process runtime (deploy/dev/local-runtime.ts) serves each version from its own process on a loopback port. */
export const loopbackEndpoints: EndpointResolver = (v) => `http://127.0.0.1:${v.port}/v1`;

export const localEndpointKey = (v: Pick<ServedVersion, 'tenantId' | 'modelId' | 'version'>): string =>
  `${v.tenantId}/${v.modelId}/${v.version}`;

/** `map` is read at each call, so a test can add the servers it starts after the worker is up. */
export const localEndpoints =
  (map: ReadonlyMap<string, string>): EndpointResolver =>
  (v) => {
    const url = map.get(localEndpointKey(v));
    if (!url)
      throw ApplicationFailure.nonRetryable(
        `no local endpoint is configured for ${localEndpointKey(v)} (LLMHUB_LOCAL_ENDPOINTS)`,
        ClusterFailures.noEndpoint,
      );
    return url;
  };
