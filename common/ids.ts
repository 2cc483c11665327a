/**
 * Workflow ids are `<kind>/<tenant>/<key>`: readable in the Temporal UI and rebuilt by the API from the
 * caller's own tenant, so a URL carrying only the key can never reach another tenant's run.
 */
export const OperationKinds = ['model-version', 'rollout', 'fine-tune', 'conversion', 'ingestion', 'agent-run', 'pipeline'] as const;
export type OperationKind = (typeof OperationKinds)[number];

/** Idempotency keys and resource ids share one conservative alphabet so they embed safely in ids and URLs. */
export const KEY_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';
const keyRe = new RegExp(KEY_PATTERN);
export const isValidKey = (key: string): boolean => keyRe.test(key);

export function workflowId(kind: OperationKind, tenantId: string, key: string): string {
  return `${kind}/${tenantId}/${key}`;
}

export function parseWorkflowId(id: string): { kind: string; tenantId: string; key: string } | undefined {
  const [kind, tenantId, ...rest] = id.split('/');
  if (!kind || !tenantId || rest.length === 0) return undefined;
  return { kind, tenantId, key: rest.join('/') };
}
