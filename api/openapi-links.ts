/**
 * OpenAPI links (route option `links`, read by @fastify/swagger): from the answer of an operation that creates an
 * object to the operations that read and steer it, so clients and fuzzers (schemathesis' stateful phase) can follow
 * them. Operations are named by method and path as the document writes them ('GET /v1/deployments/{id}').
 */
export interface LinkTarget {
  /** Values by parameter name: runtime expressions such as '$response.body#/deploymentId' or '$request.path.id'. */
  parameters?: Record<string, string>;
  requestBody?: unknown;
  description?: string;
}

/** `{ operationRef: '#/paths/~1v1~1deployments~1{id}/get', ... }` for 'GET /v1/deployments/{id}'. */
export function linkTo(operation: string, target: LinkTarget = {}) {
  const [method, path] = operation.split(' ') as [string, string];
  const pointer = path.replaceAll('~', '~0').replaceAll('/', '~1');
  return { operationRef: `#/paths/${pointer}/${method.toLowerCase()}`, ...target };
}
