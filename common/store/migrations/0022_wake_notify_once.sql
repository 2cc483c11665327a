-- 0016's trigger fired for every statement that named wake_requested_at, the api's own take (SET ... = NULL) included,
-- even one that matched no row: each take notified the relay, which took again, a loop of ~200 statements a second
-- in every api process. Now only a wake-up being requested (NULL to a time) notifies, once per version.
DROP TRIGGER served_versions_wake_notify ON served_versions;
CREATE TRIGGER served_versions_wake_notify AFTER UPDATE OF wake_requested_at ON served_versions
  FOR EACH ROW WHEN (OLD.wake_requested_at IS NULL AND NEW.wake_requested_at IS NOT NULL)
  EXECUTE FUNCTION llmhub_notify_autoscale();
