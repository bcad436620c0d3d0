// The post-conditions every run ends with, one per file.
import type { Check } from '../scripts/lib/check.ts';
import { backendHealthy } from './backend-healthy.ts';
import { dashboardAnswers } from './dashboard.ts';
import { database } from './database.ts';
import { backendConnected, noErrors } from './backend-logs.ts';
import { envMode } from './env-mode.ts';
import { imagesPinned } from './images-pinned.ts';
import { nginxConfig } from './nginx-config.ts';
import { httpsChain } from './https-chain.ts';
import { certificateExpiry } from './certificate-expiry.ts';
import { websocketUpgrade } from './websocket.ts';
import { dashboardRestricted } from './dashboard-restricted.ts';
import { backendPortsLocal } from './backend-ports.ts';

export const installChecks: Check[] = [backendHealthy, dashboardAnswers, database, backendConnected, noErrors, envMode, imagesPinned];

/** nginx, the certificate and what the droplet exposes; each applies to hosts with [domains] (backend-ports-local also to firewall = true). */
export const httpsChecks: Check[] = [nginxConfig, httpsChain, certificateExpiry, websocketUpgrade, dashboardRestricted, backendPortsLocal];

/** Every check that applies to a host (each check's appliesTo decides). */
export const allChecks: Check[] = [...installChecks, ...httpsChecks];
