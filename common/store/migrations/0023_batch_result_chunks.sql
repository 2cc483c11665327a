-- A page's once-a-second save of its answers as one row holding their output lines (JSONL text), not a row per line:
-- the row per line cost pg's array escaping of every answer in the worker and an insert into two indexes per line in
-- PostgreSQL. seq orders a page's saves, so the first answer per custom_id still wins when they are read back.
-- batch_results stays: rows of a page in flight across the upgrade are read (first) and dropped as before.
CREATE TABLE batch_result_chunks (
  tenant_id  text NOT NULL REFERENCES tenants(id),
  batch_id   text NOT NULL,
  page       integer NOT NULL,
  seq        bigint GENERATED ALWAYS AS IDENTITY,
  lines      text NOT NULL,
  PRIMARY KEY (tenant_id, batch_id, page, seq)
);
-- Rows live a few seconds (dropped once the page's object is written): stored without compression, which would only
-- cost PostgreSQL CPU at every save.
ALTER TABLE batch_result_chunks ALTER COLUMN lines SET STORAGE EXTERNAL;
