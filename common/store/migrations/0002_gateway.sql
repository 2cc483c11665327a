-- Inference gateway state: where each model version is served, how traffic is split between versions,
-- tenant projects, request/token limits leased in slices by gateway replicas, metered usage and the
-- per-version metrics the rollout analysis reads.

-- Base URL of the version's OpenAI-compatible server (e.g. http://svc.ns:8000/v1); NULL until deployed.
ALTER TABLE model_versions ADD COLUMN endpoint_url text;

CREATE TABLE model_routes (
  tenant_id       text NOT NULL,
  model_id        text NOT NULL,
  stable_version  text NOT NULL,
  canary_version  text,
  -- Percent of weighted traffic that goes to the canary; the rest goes to stable.
  canary_weight   integer NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id),
  FOREIGN KEY (tenant_id, model_id, stable_version) REFERENCES model_versions (tenant_id, model_id, version),
  FOREIGN KEY (tenant_id, model_id, canary_version) REFERENCES model_versions (tenant_id, model_id, version),
  CHECK (canary_version IS NULL OR canary_version <> stable_version)
);

CREATE TABLE projects (
  tenant_id   text NOT NULL REFERENCES tenants (id),
  id          text NOT NULL,
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

-- A limit for a whole tenant (subject '') or one caller of it (subject 'key:<id>'), per fixed window.
CREATE TABLE gateway_limits (
  tenant_id       text NOT NULL REFERENCES tenants (id),
  subject         text NOT NULL DEFAULT '',
  window_seconds  integer NOT NULL CHECK (window_seconds > 0),
  max_requests    bigint CHECK (max_requests >= 0),
  max_tokens      bigint CHECK (max_tokens >= 0),
  PRIMARY KEY (tenant_id, subject)
);

-- What is left of a limit in one window; replicas lease slices from it and give unused ones back.
-- tokens_left can go below zero when real usage exceeded what was reserved (the debt is charged, not lost).
CREATE TABLE gateway_limit_windows (
  tenant_id      text NOT NULL,
  subject        text NOT NULL,
  window_start   timestamptz NOT NULL,
  requests_left  bigint NOT NULL,
  tokens_left    bigint NOT NULL,
  PRIMARY KEY (tenant_id, subject, window_start)
);

CREATE TABLE gateway_usage (
  tenant_id          text NOT NULL,
  project_id         text NOT NULL,
  model_id           text NOT NULL,
  version            text NOT NULL,
  subject            text NOT NULL,
  minute             timestamptz NOT NULL,
  requests           bigint NOT NULL,
  prompt_tokens      bigint NOT NULL,
  completion_tokens  bigint NOT NULL,
  PRIMARY KEY (tenant_id, project_id, model_id, version, subject, minute)
);

-- One row per replica and flush: counts plus fixed-bucket histograms (bounds in common/store/gateway-metrics.ts),
-- summed over a window by the rollout analysis.
CREATE TABLE gateway_metrics (
  id                  bigserial PRIMARY KEY,
  at                  timestamptz NOT NULL,
  replica             text NOT NULL,
  tenant_id           text NOT NULL,
  model_id            text NOT NULL,
  version             text NOT NULL,
  requests            bigint NOT NULL,
  errors              bigint NOT NULL,
  error_classes       jsonb NOT NULL,
  latency_ms_buckets  bigint[] NOT NULL,
  ttft_ms_buckets     bigint[] NOT NULL,
  prompt_tokens       bigint NOT NULL,
  completion_tokens   bigint NOT NULL
);
CREATE INDEX gateway_metrics_version_at ON gateway_metrics (tenant_id, model_id, version, at);

-- Gateway replicas cache routes, projects, limits and API keys; these notifications tell them to refresh at once.
CREATE FUNCTION llmhub_notify_gateway() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'api_keys' THEN
    PERFORM pg_notify('llmhub_gateway', 'key:' || COALESCE(NEW.id, OLD.id));
  ELSE
    PERFORM pg_notify('llmhub_gateway', 'config');
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER model_routes_notify AFTER INSERT OR UPDATE OR DELETE ON model_routes
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER model_versions_endpoint_notify AFTER UPDATE OF endpoint_url ON model_versions
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER projects_notify AFTER INSERT OR UPDATE OR DELETE ON projects
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER gateway_limits_notify AFTER INSERT OR UPDATE OR DELETE ON gateway_limits
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER api_keys_revoked_notify AFTER UPDATE OF revoked_at ON api_keys
  FOR EACH ROW EXECUTE FUNCTION llmhub_notify_gateway();
