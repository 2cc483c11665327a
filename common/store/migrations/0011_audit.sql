-- Every call's row records how its reply ended; inference rows name the model, version and tokens.
ALTER TABLE audit_log
  ADD COLUMN duration_ms       double precision,
  ADD COLUMN bytes_sent        bigint,
  ADD COLUMN disconnected      boolean NOT NULL DEFAULT false,
  ADD COLUMN model             text,
  ADD COLUMN model_version     text,
  ADD COLUMN prompt_tokens     bigint,
  ADD COLUMN completion_tokens bigint,
  ADD COLUMN error_class       text;
-- Operators' reads across tenants page by (at, id); retention deletes by at.
CREATE INDEX audit_log_at_id ON audit_log (at, id);

-- Refused calls without valid credentials, counted per source address and minute instead of a row each.
CREATE TABLE audit_unauthenticated (
  ip      text NOT NULL,
  minute  timestamptz NOT NULL,
  count   bigint NOT NULL,
  PRIMARY KEY (ip, minute)
);
CREATE INDEX audit_unauthenticated_minute ON audit_unauthenticated (minute);
