// What a client of a droplet with domains sees: HTTPS requests to its names (verified against
// pebble's CA only, sent to the droplet's address since the test host has no fleet DNS), and a
// probe that asks every 100 ms during a promotion, to measure what clients really got.
import https from 'node:https';
import type http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface Endpoint {
  /** The droplet's address. */
  ip: string;
  /** pebble's CA and roots, PEM. */
  ca: string;
}

/** One request over a fresh TLS connection, as a new client makes it. */
export function httpsRequest(to: Endpoint, servername: string, path: string, opts: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      { host: to.ip, port: 443, path, method: opts.method ?? 'GET', servername, ca: to.ca, headers: { host: servername, ...opts.headers }, timeout: opts.timeoutMs ?? 10_000, agent: false },
      response => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`timeout: https://${servername}${path}`)));
    request.on('error', reject);
    request.end(opts.body);
  });
}

export interface Sample {
  /** When the request was sent, ms since the epoch. */
  at: number;
  /** The HTTP status, or 0 when no answer came (refused, reset, timeout). */
  status: number;
  retryAfter?: string;
  contentType?: string;
  body: string;
}

export interface ProbeReport {
  samples: Sample[];
  /** The longest time between two 200 answers, in ms: how long clients got nothing useful. */
  longestGapMs: number;
  statuses: Map<number, number>;
}

/** Asks https://<servername><path> every `everyMs` until stopped; the report says what clients got. */
export function probe(to: Endpoint, servername: string, path: string, everyMs = 100): { stop: () => Promise<ProbeReport> } {
  const samples: Sample[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const at = Date.now();
      try {
        const answer = await httpsRequest(to, servername, path, { timeoutMs: 2000 });
        samples.push({ at, status: answer.status, retryAfter: answer.headers['retry-after'] as string | undefined, contentType: answer.headers['content-type'], body: answer.body });
      } catch (error) {
        samples.push({ at, status: 0, body: (error as Error).message });
      }
      await sleep(Math.max(0, everyMs - (Date.now() - at)));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return report(samples);
    },
  };
}

function report(samples: Sample[]): ProbeReport {
  const statuses = new Map<number, number>();
  let longestGapMs = 0;
  let lastGood: number | undefined;
  for (const sample of samples) {
    statuses.set(sample.status, (statuses.get(sample.status) ?? 0) + 1);
    if (sample.status !== 200) continue;
    if (lastGood !== undefined) longestGapMs = Math.max(longestGapMs, sample.at - lastGood);
    lastGood = sample.at;
  }
  return { samples, longestGapMs, statuses };
}
