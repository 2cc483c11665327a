-- What a model is (seeds 001/004): its type, context length, size, weight precision and what one replica needs.
-- All optional: models created before keep working, and POST /v1/deploy falls back to the cluster's default resources.
ALTER TABLE models
  ADD COLUMN model_type       text CHECK (model_type IN ('chat', 'completion', 'embedding')),
  ADD COLUMN context_length   integer CHECK (context_length > 0),
  ADD COLUMN parameter_count  bigint CHECK (parameter_count > 0),
  ADD COLUMN weight_precision text CHECK (weight_precision IN ('fp32', 'fp16', 'bf16', 'fp8', 'int8', 'int4')),
  -- {cpu: Kubernetes quantity, gpu: count, memory: quantity}: the deploy body's resources, as the rollout gets them.
  ADD COLUMN resources        jsonb CHECK (resources IS NULL OR jsonb_typeof(resources) = 'object');
