import type { Logger } from '../../common/logger';
import { rolloutAlertsTotal, rolloutRollbacksTotal, type RollbackReason } from './metrics';

export interface RolloutAlert {
  tenantId: string;
  modelId: string;
  version: string;
  workflowId: string;
  reason: RollbackReason;
  message: string;
}

export interface AlertSink {
  emit(alert: RolloutAlert): Promise<void>;
}

/** Log line and counter always; a POST to ROLLOUT_ALERT_WEBHOOK when one is configured (failures are retried by the activity). */
export const createAlertSink = (logger: Logger, webhookUrl?: string): AlertSink => ({
  async emit(alert) {
    logger.warn({ alert }, `rollout of ${alert.modelId}@${alert.version} rolled back: ${alert.message}`);
    if (webhookUrl) {
      const res = await fetch(webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'rollout_rolled_back', ...alert }),
      });
      if (!res.ok) throw new Error(`alert webhook answered ${res.status}`);
    }
    // Counted once the alert is out, so a retried webhook does not count twice.
    rolloutAlertsTotal.inc({ tenant: alert.tenantId, model: alert.modelId, reason: alert.reason });
    rolloutRollbacksTotal.inc({ reason: alert.reason });
  },
});
