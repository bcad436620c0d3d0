// What the backend's checks read, as one command they all use: checks with the same probe share
// one reading, so a run asks the droplet once for the engine's documents of both containers and
// of the images the inventory pins, the HTTP status of the backend's /version and of the
// dashboard, and what the backend logged since it started. Each check judges its own part.
import type { Host } from '../scripts/lib/inventory.ts';
import { engineRead, parseEngine } from '../scripts/lib/docker-api.ts';
import { sh } from '../scripts/lib/shell.ts';
import { CONTAINERS } from '../scripts/lib/steps/up.ts';

export const BACKEND_VERSION_URL = 'http://127.0.0.1:3210/version';
export const DASHBOARD_URL = 'http://127.0.0.1:6791/';

/** Counts the lines saying the backend reached its database; keeps the first three ERROR lines. */
const LOG_SUMMARY = `index($0, "Connected to Postgres database") { connected++ }
/(^|[^A-Za-z0-9_])ERROR([^A-Za-z0-9_]|$)/ && errors < 3 { errors++; print "error " $0 }
END { print "connected " connected + 0 }`;

export function backendProbe(host: Host): string {
  const objects = [
    { kind: 'container' as const, name: CONTAINERS.backend },
    { kind: 'container' as const, name: CONTAINERS.dashboard },
    { kind: 'image' as const, name: host.backend_image },
    { kind: 'image' as const, name: host.dashboard_image },
  ];
  return [
    `engine=$(${engineRead(objects)})`,
    `printf '%s\\n' "$engine"`,
    sh`curl -s -o /dev/null -o /dev/null --max-time 5 -w 'http %{url_effective} %{http_code}\n' ${BACKEND_VERSION_URL} ${DASHBOARD_URL}`,
    // The backend's document comes first: its StartedAt is the start the logs are read from.
    `started=$(printf '%s\\n' "$engine" | sed -n '/"StartedAt"/{s/.*"StartedAt": *"\\([^"]*\\)".*/\\1/p;q;}')`,
    sh`docker logs --since "$started" ${CONTAINERS.backend} 2>&1 | awk ${LOG_SUMMARY}`,
  ].join('\n');
}

export interface BackendReading {
  backend?: Record<string, any>;
  dashboard?: Record<string, any>;
  backendImage?: Record<string, any>;
  dashboardImage?: Record<string, any>;
  /** HTTP status by URL ('000' when nothing answered). */
  http: Map<string, string>;
  /** Lines since the backend started that say it connected to its database. */
  connected: number;
  /** The first three ERROR lines since it started. */
  errors: string[];
}

export function parseBackendProbe(out: string): BackendReading {
  const [backend, dashboard, backendImage, dashboardImage] = parseEngine(out).map(a => a.doc);
  const http = new Map([...out.matchAll(/^http (\S+) (\d{3})$/gm)].map(m => [m[1]!, m[2]!] as [string, string]));
  const connected = Number(/^connected (\d+)$/m.exec(out)?.[1] ?? 0);
  const errors = out.split('\n').filter(l => l.startsWith('error ')).map(l => l.slice(6));
  return { backend, dashboard, backendImage, dashboardImage, http, connected, errors };
}
