-- Platform state: tenants, their API keys (hashed), the model registry, idempotency records, audit.
CREATE TABLE tenants (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  role         text NOT NULL CHECK (role IN ('viewer', 'developer', 'operator', 'approver', 'admin')),
  -- sha256 of the secret part; the secret itself is shown once and never stored.
  secret_hash  bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE models (
  tenant_id    text NOT NULL REFERENCES tenants(id),
  id           text NOT NULL,
  name         text NOT NULL,
  description  text NOT NULL DEFAULT '',
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE model_versions (
  tenant_id       text NOT NULL,
  model_id        text NOT NULL,
  version         text NOT NULL,
  artifact_uri    text NOT NULL,
  state           text NOT NULL CHECK (state IN ('registering', 'ready', 'failed')),
  size_bytes      bigint,
  checksum        text,
  etag            text,
  failure_reason  text,
  workflow_id     text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id, version),
  FOREIGN KEY (tenant_id, model_id) REFERENCES models(tenant_id, id)
);

-- One row per (tenant, operation kind, Idempotency-Key): the body hash tells a retry from a misuse.
CREATE TABLE idempotency_keys (
  tenant_id    text NOT NULL,
  kind         text NOT NULL,
  key          text NOT NULL,
  body_hash    text NOT NULL,
  workflow_id  text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, kind, key)
);

CREATE TABLE audit_log (
  id           bigserial PRIMARY KEY,
  at           timestamptz NOT NULL DEFAULT now(),
  request_id   text NOT NULL,
  tenant_id    text,
  principal    text,
  role         text,
  method       text NOT NULL,
  route        text NOT NULL,
  url          text NOT NULL,
  status_code  integer NOT NULL,
  workflow_id  text,
  ip           text
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);
