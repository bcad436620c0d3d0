// What tests need to talk to a deployed backend as a Convex client would: the admin key from the
// operator's .secrets/<host>.env, and the stand-in's document API (kept in PostgreSQL and under
// /convex/data, so backups, restores and upgrades can be checked with real data).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Fleet } from '../fleet/index.ts';
import { adminKeyInSettings } from '../../scripts/lib/steps/admin-key.ts';

export async function adminKeyOf(fleet: Fleet, host: string): Promise<string> {
  const text = await readFile(join(fleet.dir, '.secrets', `${host}.env`), 'utf8');
  const key = adminKeyInSettings(text);
  if (!key) throw new Error(`no admin key in ${fleet.dir}/.secrets/${host}.env`);
  return key;
}

/** The backend's API as reached directly on the droplet's published port (hosts without domains). */
export function backendUrl(fleet: Fleet, host: string): string {
  return `http://${fleet.droplets[host]!.ip}:3210`;
}

export async function putDocument(baseUrl: string, key: string, id: string, value: unknown): Promise<number> {
  const response = await fetch(`${baseUrl}/api/documents/${id}`, {
    method: 'PUT',
    headers: { Authorization: `Convex ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(value),
  });
  await response.arrayBuffer();
  return response.status;
}

export async function getDocument(baseUrl: string, key: string, id: string): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${baseUrl}/api/documents/${id}`, { headers: { Authorization: `Convex ${key}` } });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: keep the text for the assertion message.
  }
  return { status: response.status, body };
}

/** The JSON document a script prints under --json. */
export interface RunJson {
  hosts: Array<{ host: string; steps: Array<{ step: string; status: string; detail: string; seconds: number }>; recap: { ok: number; changed: number; failed: number; skipped: number }; commands: number; seconds: number }>;
}

export function parseRunJson(stdout: string): RunJson {
  return JSON.parse(stdout) as RunJson;
}
