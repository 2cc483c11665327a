// lint-as: api/routes/example.ts
import { createKnowledgeActivities } from '../../activities/knowledge';

export const factory = createKnowledgeActivities;
