-- Model conversions (POST /v1/conversions) and the artifacts they register on model versions.
-- A conversion row is also the memo: at most one live row per (tenant, memo key), where the memo key hashes the
-- model artifact's checksum, the normalised options and the toolchain version. A row in state 'error' (the run
-- broke: crash, cancel, infrastructure) gives the key up, so the next request builds again.
CREATE TABLE conversions (
  tenant_id               text NOT NULL,
  conversion_id           text NOT NULL,
  workflow_id             text NOT NULL UNIQUE,
  model_id                text NOT NULL,
  version                 text NOT NULL,
  memo_key                text NOT NULL,
  toolchain_version       text NOT NULL,
  options                 jsonb NOT NULL,
  state                   text NOT NULL CHECK (state IN ('running', 'succeeded', 'partial', 'failed', 'error')),
  -- Per target: status (published | failed | not_run), validation errors, latency, published URIs.
  targets                 jsonb NOT NULL DEFAULT '[]',
  triton_repository_uri   text,
  error                   text,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, conversion_id),
  FOREIGN KEY (tenant_id, model_id, version) REFERENCES model_versions (tenant_id, model_id, version)
);
CREATE UNIQUE INDEX conversions_memo ON conversions (tenant_id, memo_key) WHERE state <> 'error';

-- Converted artifacts of a model version (one row per published file), for serving and for GET on the version.
CREATE TABLE model_artifacts (
  tenant_id               text NOT NULL,
  model_id                text NOT NULL,
  version                 text NOT NULL,
  kind                    text NOT NULL CHECK (kind IN ('onnx', 'onnx-int8', 'tensorrt')),
  uri                     text NOT NULL,
  sha256                  text NOT NULL,
  size_bytes              bigint NOT NULL,
  -- The Triton model repository (s3://.../triton) whose <model>/config.pbtxt serves this file.
  triton_repository_uri   text NOT NULL,
  conversion_workflow_id  text NOT NULL,
  created_at              timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id, version, kind, uri),
  FOREIGN KEY (tenant_id, model_id, version) REFERENCES model_versions (tenant_id, model_id, version)
);
