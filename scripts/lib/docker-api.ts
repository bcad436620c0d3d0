// Reading Docker's state from the Engine API on the droplet's own socket. Each `docker` command
// starts a Go binary that costs far more than the answer it fetches (about ten times a curl); a
// converged run asks about containers, images and networks many times, so facts and checks
// ask the API itself with one curl for several objects. The answers are the same documents
// `docker inspect` prints (the CLI is a client of this API). Where curl is missing (a bare
// droplet before the docker step installs it), the docker CLI prints them instead.
import type { Script } from './shell.ts';
import { script, sh } from './shell.ts';

export type EngineObject =
  | { kind: 'version' }
  | { kind: 'container'; name: string }
  | { kind: 'image'; name: string }
  | { kind: 'network'; name: string };

const SOCKET = '/var/run/docker.sock';
const MARK = '@@convex-ops-docker-api';

function path(object: EngineObject): string {
  switch (object.kind) {
    case 'version':
      return '/version';
    case 'container':
      return `/containers/${object.name}/json`;
    case 'image':
      return `/images/${object.name}/json`;
    case 'network':
      return `/networks/${object.name}`;
  }
}

function cli(object: EngineObject): Script {
  switch (object.kind) {
    case 'version':
      return sh`docker version --format '{{json .}}'`;
    case 'container':
      return sh`docker inspect --type container ${object.name}`;
    case 'image':
      return sh`docker image inspect ${object.name}`;
    case 'network':
      return sh`docker network inspect ${object.name}`;
  }
}

/**
 * A sh snippet that prints each object's document followed by a line `<MARK> <status>`: 200
 * when it exists, 404 when it does not, 000 when the engine does not answer. Its output goes to
 * parseEngine.
 */
export function engineRead(objects: EngineObject[]): Script {
  const urls = objects.map(o => `http://docker${path(o)}`);
  const found = sh`then printf '%s\\n${MARK} 200\\n' "$out"; else echo; echo '${MARK} 404'; fi`;
  const viaCli = objects
    .map(o => script`if out=$(${cli(o)} 2>/dev/null); ${found}`)
    .reduce<Script>((done, next, i) => (i === 0 ? next : script`${done}; ${next}`), sh``);
  const viaCurl = sh`if command -v curl >/dev/null 2>&1; then curl -s --max-time 20 --unix-socket ${SOCKET} -w '\\n${MARK} %{http_code}\\n' ${urls}; `;
  const none = sh`else for u in ${urls}; do echo; echo '${MARK} 000'; done; fi`;
  return script`${viaCurl}elif command -v docker >/dev/null 2>&1 && docker version >/dev/null 2>&1; then ${viaCli}; ${none}`;
}

export interface EngineAnswer {
  status: number;
  /** The object's document (the first of the array the CLI prints), when it exists. */
  doc?: Record<string, any>;
}

/** The answers of engineRead, in the order of its objects. */
export function parseEngine(out: string): EngineAnswer[] {
  const answers: EngineAnswer[] = [];
  const mark = new RegExp(`\\n?${MARK} (\\d{3})\\n?`, 'g');
  let start = 0;
  for (let m = mark.exec(out); m; m = mark.exec(out)) {
    const body = out.slice(start, m.index).trim();
    start = m.index + m[0].length;
    const status = Number(m[1]);
    let doc: Record<string, any> | undefined;
    if (status === 200 && body) {
      try {
        const parsed = JSON.parse(body) as unknown;
        doc = (Array.isArray(parsed) ? parsed[0] : parsed) as Record<string, any> | undefined;
      } catch {
        doc = undefined;
      }
    }
    answers.push({ status, ...(doc ? { doc } : {}) });
  }
  return answers;
}
