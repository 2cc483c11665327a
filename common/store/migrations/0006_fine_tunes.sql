-- Per-tenant GPU quota; a tenant without a row gets DEFAULT_GPU_QUOTA (common/fine-tune.ts).
CREATE TABLE gpu_quotas (
  tenant_id   text PRIMARY KEY REFERENCES tenants(id),
  gpus        integer NOT NULL CHECK (gpus >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per fine-tune run that waits for or holds GPUs. Keyed by workflow id, so a retried activity finds its own
-- claim (and its place in the queue) again. Waiting claims are served by priority, then by enqueue time. Releasing
-- keeps the row (released_at): a queue-wait activity still running after its workflow gave up must not enqueue again.
CREATE TABLE gpu_claims (
  workflow_id  text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  gpus         integer NOT NULL CHECK (gpus > 0),
  priority     integer NOT NULL,
  enqueued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  granted_at   timestamptz,
  released_at  timestamptz
);
CREATE INDEX gpu_claims_queue ON gpu_claims (tenant_id, priority DESC, enqueued_at, workflow_id) WHERE released_at IS NULL;

-- Where a model version came from. Fine-tunes write kind 'fine_tune' (parent: the base version); conversion and
-- rollout add their own kinds. details holds what the kind needs to reproduce the version (dataset hash,
-- hyperparameters, checkpoint and artifact URIs with hashes, ...).
CREATE TABLE model_lineage (
  id                bigserial PRIMARY KEY,
  tenant_id         text NOT NULL,
  model_id          text NOT NULL,
  version           text NOT NULL,
  kind              text NOT NULL CHECK (kind IN ('fine_tune', 'conversion', 'rollout')),
  parent_model_id   text,
  parent_version    text,
  workflow_id       text NOT NULL,
  details           jsonb NOT NULL DEFAULT '{}',
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, model_id, version, kind, workflow_id),
  FOREIGN KEY (tenant_id, model_id, version) REFERENCES model_versions (tenant_id, model_id, version) ON DELETE CASCADE
);
CREATE INDEX model_lineage_parent ON model_lineage (tenant_id, parent_model_id, parent_version);
