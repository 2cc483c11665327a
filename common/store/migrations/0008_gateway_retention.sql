-- Retention deletes by age across all versions and subjects; without these the hourly deletes scan whole tables.
CREATE INDEX gateway_metrics_at ON gateway_metrics (at);
CREATE INDEX gateway_limit_windows_start ON gateway_limit_windows (window_start);
