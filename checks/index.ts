// The post-conditions every run ends with, one per file.
import type { Check } from '../scripts/lib/check.ts';
import { backendHealthy } from './backend-healthy.ts';
import { dashboardAnswers } from './dashboard.ts';
import { database } from './database.ts';
import { backendConnected, noErrors } from './backend-logs.ts';
import { envMode } from './env-mode.ts';
import { imagesPinned } from './images-pinned.ts';

export const installChecks: Check[] = [backendHealthy, dashboardAnswers, database, backendConnected, noErrors, envMode, imagesPinned];

/** Every check that applies to a host (each check's appliesTo decides). */
export const allChecks: Check[] = [...installChecks];
