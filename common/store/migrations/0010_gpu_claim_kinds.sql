-- One GPU quota per tenant for everything that holds GPUs. A claim's key (the workflow_id column) is the fine-tune's
-- workflow id, the conversion run's id, or for serving the served version (tenant, cluster, model, version), because a
-- served version holds its GPUs after the rollout that applied it has ended.
ALTER TABLE gpu_claims ADD COLUMN kind text NOT NULL DEFAULT 'fine_tune' CHECK (kind IN ('fine_tune', 'serving', 'conversion'));
