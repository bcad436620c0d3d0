// What the backend's log says: the failures operators meet, each recognised by its words.
import type { ContainerInfo, LogLine } from './facts.ts';

/** What a backend log line says, when it is one of the failures operators meet. */
export interface LogCause { id: string; line: string; detail?: string }

const LOG_PATTERNS: Array<{ id: string; pattern: RegExp }> = [
  // S3 first: their TLS, DNS and connection errors would otherwise read as PostgreSQL's. The
  // backend's AWS SDK names the S3 error code (NoSuchBucket…) or says the request was not sent.
  { id: 's3-bucket-missing', pattern: /NoSuchBucket/ },
  { id: 's3-access-denied', pattern: /\b(AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch)\b/ },
  { id: 's3-tls', pattern: /(?=.*\b(?:S3|s3|bucket)\b).*(invalid peer certificate|UnknownIssuer|certificate verify failed|SSL|TLS)/ },
  { id: 's3-endpoint', pattern: /(?=.*\b(?:S3|s3|bucket)\b).*(dispatch failure|dns error|failed to lookup address|Connection refused|timed out)/i },
  { id: 'postgres-url-db-name', pattern: /cluster url already contains db name:?\s*(\S*)/i },
  { id: 'postgres-url-user', pattern: /cluster url username must be set/i },
  { id: 'postgres-hba', pattern: /no pg_hba\.conf entry for host "?([0-9a-fA-F.:]+)"?/i },
  { id: 'postgres-tls', pattern: /invalid peer certificate|TLS handshake|certificate verify failed/i },
  { id: 'postgres-ssl-required', pattern: /server does not support SSL|SSL (?:connection )?is required|requires? SSL|SSL required/i },
  { id: 'postgres-db-missing', pattern: /database "?([A-Za-z0-9_-]+)"? does not exist/i },
  { id: 'postgres-password', pattern: /password authentication failed for user "?([\w-]+)"?/i },
  { id: 'postgres-resolve', pattern: /failed to lookup address|could not translate host name|Name or service not known|Temporary failure in name resolution/i },
  { id: 'postgres-refused', pattern: /connection refused/i },
  { id: 'port-in-use', pattern: /address already in use/i },
];

/** How a log cause is named where another finding refers to it. */
export const LOG_CAUSE_TITLES: Record<string, string> = {
  'postgres-url-db-name': 'a database name in POSTGRES_URL',
  'postgres-url-user': 'no user in POSTGRES_URL',
  'postgres-hba': 'pg_hba.conf refusing the backend',
  'postgres-tls': "PostgreSQL's certificate failing verification",
  'postgres-ssl-required': 'a TLS mismatch with PostgreSQL',
  'postgres-db-missing': 'a missing database',
  'postgres-password': 'a wrong database password',
  'postgres-resolve': 'an unresolvable database host',
  'postgres-refused': 'PostgreSQL refusing connections',
  'port-in-use': 'a port already in use',
  's3-bucket-missing': 'a missing S3 bucket',
  's3-access-denied': 'S3 refusing the credentials',
  's3-tls': "the S3 endpoint's certificate failing verification",
  's3-endpoint': 'an unreachable S3 endpoint',
};

/** The first line of each known failure, oldest first. */
export function classifyLog(lines: LogLine[]): LogCause[] {
  const found = new Map<string, LogCause>();
  for (const { text } of lines) {
    for (const { id, pattern } of LOG_PATTERNS) {
      const match = pattern.exec(text);
      if (!match) continue;
      if (!found.has(id)) found.set(id, { id, line: text.trim(), ...(match[1] ? { detail: match[1] } : {}) });
      break; // one cause per line: the most specific pattern comes first
    }
  }
  return [...found.values()];
}

/**
 * The lines of the container's current run. StartedAt is no bound: under load the engine records
 * it after the process has printed its first lines. But the engine drains a run's output before it
 * records that run's end, so a container running since a restart has written every line after
 * FinishedAt (the end of the run before) in this run; one that never stopped, every line. One that
 * stopped since its last start: from that start, with a little slack.
 */
export function currentLog(lines: LogLine[], container: ContainerInfo | undefined): LogLine[] {
  const started = container ? Date.parse(container.startedAt) : NaN;
  if (!container || Number.isNaN(started) || started <= 0) return lines;
  const finished = Date.parse(container.finishedAt);
  if (Number.isNaN(finished) || finished <= 0) return lines;
  if (finished < started) return lines.filter(l => l.time === undefined || l.time > finished);
  return lines.filter(l => l.time === undefined || l.time >= started - 2000);
}

export const excerpt = (line: string) => {
  // Drop the line's own timestamp and level, keep the message, at most 200 characters.
  const message = line.replace(/^\S*\d{4}-\d\d-\d\dT\S+\s+/, '').replace(/^(ERROR|WARN|INFO)\s+/, '');
  return `"${message.length > 200 ? message.slice(0, 197) + '…' : message}"`;
};
