-- Prices, budgets and budget alerts (the usage report and the gateway's budget stop).

-- A price of a model's tokens from `effective_from` on, until the next one. tenant_id '' is the platform operators'
-- price for every tenant, and it wins over a tenant's own (the cost an operator sees must not be one a tenant chose);
-- version '' prices every version (deployed or provider model) of the model that has no price of its own.
CREATE TABLE model_prices (
  tenant_id           text NOT NULL,
  model_id            text NOT NULL,
  version             text NOT NULL DEFAULT '',
  effective_from      timestamptz NOT NULL,
  currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  input_per_million   numeric(20, 6) NOT NULL CHECK (input_per_million >= 0),
  output_per_million  numeric(20, 6) NOT NULL CHECK (output_per_million >= 0),
  PRIMARY KEY (tenant_id, model_id, version, effective_from)
);

-- A monthly budget of a whole tenant (project_id '') or of one of its projects.
CREATE TABLE budgets (
  tenant_id       text NOT NULL REFERENCES tenants (id),
  project_id      text NOT NULL DEFAULT '',
  amount          numeric(20, 6) NOT NULL CHECK (amount >= 0),
  currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  -- Percent of the amount at which an alert is sent, ascending.
  thresholds      integer[] NOT NULL,
  webhook_url     text,
  -- The key the alerts are HMAC-signed with; write-only through the API.
  webhook_secret  text,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, project_id)
);

-- One alert per budget, threshold and month: the unique key decides it once, however many gateway processes see the
-- spend cross it. The row is also the delivery's outbox (at least once, same id, until delivered_at is set).
CREATE TABLE budget_alerts (
  id               uuid PRIMARY KEY,
  tenant_id        text NOT NULL,
  project_id       text NOT NULL,
  period           date NOT NULL,
  threshold        integer NOT NULL,
  spent            numeric(20, 6) NOT NULL,
  amount           numeric(20, 6) NOT NULL,
  currency         text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  delivered_at     timestamptz,
  -- Set when delivery stopped for good: no webhook, or every attempt failed.
  abandoned_at     timestamptz,
  last_error       text,
  UNIQUE (tenant_id, project_id, period, threshold)
);
CREATE INDEX budget_alerts_due ON budget_alerts (next_attempt_at) WHERE delivered_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX gateway_usage_tenant_minute ON gateway_usage (tenant_id, minute);

CREATE TRIGGER model_prices_notify AFTER INSERT OR UPDATE OR DELETE ON model_prices
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER budgets_notify AFTER INSERT OR UPDATE OR DELETE ON budgets
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
