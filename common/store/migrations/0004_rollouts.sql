-- One rollout per model at a time: the API takes the row in the same transaction as the idempotency claim,
-- the rollout workflow deletes it when it ends (whatever the outcome), so the lock is not tied to Temporal's view
-- of which workflow ids are running.
CREATE TABLE rollout_locks (
  tenant_id      text NOT NULL,
  model_id       text NOT NULL,
  deployment_id  text NOT NULL,
  workflow_id    text NOT NULL,
  acquired_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id),
  FOREIGN KEY (tenant_id, model_id) REFERENCES models (tenant_id, id)
);
