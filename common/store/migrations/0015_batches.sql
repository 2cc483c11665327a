-- Files uploaded for batches, and their outputs (api/routes/files.ts). The content is in the tenant's bucket; a page's
-- first byte is kept so the batch workflow reads one page with one ranged GET.
CREATE TABLE batch_files (
  tenant_id     text NOT NULL REFERENCES tenants(id),
  id            text NOT NULL,
  purpose       text NOT NULL,
  filename      text NOT NULL,
  bytes         bigint NOT NULL,
  line_count    integer NOT NULL,
  page_offsets  bigint[] NOT NULL,
  -- The lines' urls, so a batch of another endpoint is refused at its creation.
  urls          text[] NOT NULL,
  object_key    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

-- Batches in OpenAI's shape (api/routes/batches.ts); the workflow batch/<tenant>/<id> moves status and timestamps.
CREATE TABLE batches (
  tenant_id          text NOT NULL REFERENCES tenants(id),
  id                 text NOT NULL,
  endpoint           text NOT NULL,
  input_file_id      text NOT NULL,
  completion_window  text NOT NULL,
  metadata           jsonb,
  status             text NOT NULL,
  created_by         text NOT NULL,
  total              integer NOT NULL,
  output_file_id     text,
  error_file_id      text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  expires_at         timestamptz NOT NULL,
  in_progress_at     timestamptz,
  finalizing_at      timestamptz,
  completed_at       timestamptz,
  expired_at         timestamptz,
  cancelling_at      timestamptz,
  cancelled_at       timestamptz,
  failed_at          timestamptz,
  PRIMARY KEY (tenant_id, id)
);

-- Each finished page's counts, written by the page's activity (idempotent): the API's live request_counts.
CREATE TABLE batch_pages (
  tenant_id  text NOT NULL REFERENCES tenants(id),
  batch_id   text NOT NULL,
  page       integer NOT NULL,
  completed  integer NOT NULL,
  failed     integer NOT NULL,
  PRIMARY KEY (tenant_id, batch_id, page)
);

-- Secrets the platform's roles share through the database they all reach (the batch gateway credential's key).
CREATE TABLE service_secrets (
  name    text PRIMARY KEY,
  secret  bytea NOT NULL
);

-- Each line's result until its page is written to S3 as one object: one row per (batch, custom_id), and the first
-- written stays, so a line retried after a crash never has two results.
CREATE TABLE batch_results (
  tenant_id  text NOT NULL REFERENCES tenants(id),
  batch_id   text NOT NULL,
  custom_id  text NOT NULL,
  page       integer NOT NULL,
  result     text NOT NULL,
  PRIMARY KEY (tenant_id, batch_id, custom_id)
);
CREATE INDEX batch_results_page ON batch_results (tenant_id, batch_id, page);
