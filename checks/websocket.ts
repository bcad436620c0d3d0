import type { Check } from '../scripts/lib/check.ts';
import { sh } from '../scripts/lib/shell.ts';
import { trustedCa } from '../scripts/lib/facts/certificate.ts';

/** The path Convex clients open their sync websocket on: /api/<client version>/sync. */
export const SYNC_PATH = '/api/1.0.0/sync';

/** A websocket upgrade of the sync endpoint through nginx is answered "101 Switching Protocols". */
export const websocketUpgrade: Check = {
  name: 'websocket',
  appliesTo: host => Boolean(host.domains),
  probe: host => {
    const api = host.domains!.api;
    // The connection stays open after the 101, so curl ends at --max-time; -w still prints the code.
    return sh`curl -sS -o /dev/null -w '%{http_code}' --http1.1 --max-time 3 --cacert ${trustedCa(host)} --resolve ${`${api}:443:127.0.0.1`} -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: Y29udmV4LW9wcyBjaGVjayE=' ${`https://${api}${SYNC_PATH}`} 2>&1`;
  },
  verdict: (out, _code, host) => {
    const status = /(\d{3})\s*$/.exec(out.trim())?.[1];
    return status === '101' ? undefined : `a websocket upgrade of https://${host.domains!.api}${SYNC_PATH} got ${status ?? 'no answer'}${status ? '' : `: ${out.trim()}`}, not 101`;
  },
};
