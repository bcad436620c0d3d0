// What the backend's checks read, as one command they all use: checks with the same probe share
// one reading, so a run asks the droplet once for the engine's documents of both containers and
// of the images the inventory pins, the HTTP status of the backend's /version and of the
// dashboard, and what the backend logged since it started (from the engine's API: each docker
// CLI process costs several curls). Each check judges its own part.
import type { Host } from '../scripts/lib/inventory.ts';
import { engineRead, parseEngine } from '../scripts/lib/docker-api.ts';
import type { Script } from '../scripts/lib/shell.ts';
import { lines, script, sh } from '../scripts/lib/shell.ts';
import { CONTAINERS } from '../scripts/lib/steps/docker.ts';

export const BACKEND_VERSION_URL = 'http://127.0.0.1:3210/version';
export const DASHBOARD_URL = 'http://127.0.0.1:6791/';

/** Counts the lines saying the backend reached its database; keeps the first three ERROR lines. */
const LOG_SUMMARY = `index($0, "Connected to Postgres database") { connected++ }
/(^|[^A-Za-z0-9_])ERROR([^A-Za-z0-9_]|$)/ && errors < 3 { errors++; print "error " $0 }
END { print "connected " connected + 0 }`;

/** Docker's multiplexed log stream (a container without a TTY) to plain text. */
export const DEMUX = 'binmode STDIN; binmode STDOUT; while (read(STDIN, $h, 8) == 8) { read(STDIN, $b, unpack("x4 N", $h)); print $b }';

export function backendProbe(host: Host): Script {
  const objects = [
    { kind: 'container' as const, name: CONTAINERS.backend },
    { kind: 'container' as const, name: CONTAINERS.dashboard },
    { kind: 'image' as const, name: host.backend_image },
    { kind: 'image' as const, name: host.dashboard_image },
  ];
  return lines(
    script`engine=$(${engineRead(objects)})`,
    sh`printf '%s\\n' "$engine"`,
    sh`curl -s -o /dev/null -o /dev/null --max-time 5 -w 'http %{url_effective} %{http_code}\n' ${BACKEND_VERSION_URL} ${DASHBOARD_URL}`,
    // The backend's document comes first. The lines of its current run are those after the run
    // before it ended (FinishedAt: the engine drains a run's output before it records the end),
    // all of them when it never stopped: StartedAt is no bound, as under load the engine records
    // it after the process has printed its first lines (doctor/log.ts currentLog, the same rule).
    sh`started=$(printf '%s\\n' "$engine" | sed -n '/"StartedAt"/{s/.*"StartedAt": *"\\([^"]*\\)".*/\\1/p;q;}')`,
    sh`finished=$(printf '%s\\n' "$engine" | sed -n '/"FinishedAt"/{s/.*"FinishedAt": *"\\([^"]*\\)".*/\\1/p;q;}')`,
    sh`since=0`,
    sh`case "$finished" in 0001-*|'') ;; *) if [ "$(date -d "$finished" +%s%N)" -lt "$(date -d "$started" +%s%N)" ]; then since=$(date -d "$finished" +%s.%N); else since=$(date -d "$started" +%s.%N); fi 2>/dev/null ;; esac`,
    // The engine's log endpoint, as `docker logs` reads it, without starting the CLI: stdout and
    // stderr frames in order, each behind an 8-byte header (stream, size) that perl strips.
    sh`curl -sf --max-time 20 --unix-socket /var/run/docker.sock ${`http://docker/containers/${CONTAINERS.backend}/logs?stdout=1&stderr=1&since=`}"$since" | perl -e ${DEMUX} | awk ${LOG_SUMMARY}`,
  );
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
