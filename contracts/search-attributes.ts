import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Custom search attributes every operation sets, so operators can filter runs in the Temporal UI.
 * The dev server registers them at start (temporal/server.ts); a production namespace needs
 * `temporal operator search-attribute create` for each (see README).
 */
export const TenantIdKey = defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD);
export const ModelIdKey = defineSearchAttributeKey('ModelId', SearchAttributeType.KEYWORD);
export const OperationKindKey = defineSearchAttributeKey('OperationKind', SearchAttributeType.KEYWORD);
/** Where a run stands for a person, e.g. `awaiting_approval`; updated by the workflow as it moves. */
export const PhaseKey = defineSearchAttributeKey('Phase', SearchAttributeType.KEYWORD);

export const customSearchAttributes = [TenantIdKey, ModelIdKey, OperationKindKey, PhaseKey];
