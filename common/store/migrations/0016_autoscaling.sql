-- What owns a served version's replicas after its rollout (issue 21): the server spec the rollout applied (so the
-- autoscaler can start it again after scale to zero or a restart), its autoscaling settings, whether it has nothing
-- running (`cold`: gateways hold its requests), and a gateway's request to wake it up.
CREATE TABLE served_versions (
  tenant_id          text NOT NULL,
  model_id           text NOT NULL,
  version            text NOT NULL,
  cluster            text NOT NULL,
  -- The ModelServerSpec as the rollout applied it: references only (artifact URI, secret refs), never secret values.
  spec               jsonb NOT NULL,
  -- AutoscalingSpec; NULL: one replica, brought back on demand when nothing runs.
  autoscaling        jsonb,
  cold               boolean NOT NULL DEFAULT false,
  -- Bumped each time the version is running again, so a gateway holding requests knows the wake-up it waited for came.
  warm_epoch         integer NOT NULL DEFAULT 0,
  wake_requested_at  timestamptz,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id, version),
  FOREIGN KEY (tenant_id, model_id, version) REFERENCES model_versions(tenant_id, model_id, version) ON DELETE CASCADE
);
CREATE INDEX served_versions_wake ON served_versions (wake_requested_at) WHERE wake_requested_at IS NOT NULL;

-- Gateways route on `cold` and `warm_epoch`.
CREATE TRIGGER served_versions_notify AFTER INSERT OR DELETE OR UPDATE OF cold, warm_epoch ON served_versions
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();

-- A wake-up request is handed to the api role (which holds the Temporal client) and turned into signal-with-start.
CREATE FUNCTION llmhub_notify_autoscale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('llmhub_autoscale', 'wake');
  RETURN NULL;
END $$;
CREATE TRIGGER served_versions_wake_notify AFTER UPDATE OF wake_requested_at ON served_versions
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_autoscale();

-- Time requests spent in flight per flush, summed over replicas: the average concurrency the autoscaler scales on.
ALTER TABLE gateway_metrics ADD COLUMN busy_ms double precision NOT NULL DEFAULT 0;
