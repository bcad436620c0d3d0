// Pull, `compose up -d`, and wait until the backend is healthy and the dashboard answers — but
// only when the compose file, the values it takes from .env, or the images changed since the
// last successful start. Otherwise nothing is run and nothing restarts.
import pRetry, { AbortError } from 'p-retry';
import type { Host } from '../inventory.ts';
import type { Fact, Step, StepContext } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import { fileFact, sha256 } from '../files.ts';
import { sh } from '../shell.ts';
import { redact } from '../redact.ts';
import { engineRead, parseEngine } from '../docker-api.ts';
import { composeCommand, CONTAINERS, containersFact, dockerState } from './docker.ts';
import { composePath, envPath, parseEnv } from './secret.ts';

/** The local image ID each pinned reference resolves to, or '' when it has not been pulled. */
export function imagesFact(host: Host): Fact<Map<string, string>> {
  const refs = [host.backend_image, host.dashboard_image];
  return {
    key: `images:${refs.join(',')}`,
    command: engineRead(refs.map(name => ({ kind: 'image', name }))),
    parse: out => {
      const answers = parseEngine(out);
      return new Map(refs.map((ref, i) => [ref, String(answers[i]?.doc?.Id ?? '')]));
    },
  };
}

const APPLIED = `${STATE_DIR}/compose-applied`;

/** What compose turns into containers: its file plus the .env values it interpolates. */
export function composeInputsHash(composeText: string, envText: string): string {
  const env = parseEnv(envText);
  const used = [...new Set([...composeText.matchAll(/\$\{(\w+)\}/g)].map(m => m[1]!))].sort();
  return sha256(composeText + '\n' + used.map(k => `${k}=${env.get(k) ?? ''}`).join('\n'));
}

export async function composeUp(ctx: StepContext, why: string): Promise<void> {
  const { host } = ctx;
  const compose = await composeCommand(ctx);
  const images = await ctx.fact(imagesFact(host));
  const missing = [...images].filter(([, id]) => !id).map(([ref]) => ref);
  if (missing.length) {
    await ctx.change(`pull ${missing.join(', ')}`, () =>
      pRetry(() => ctx.run(sh`docker pull -q ${missing[0]!}` + (missing[1] ? sh` && docker pull -q ${missing[1]}` : ''), 'docker pull', { onOutput: c => ctx.progress(c) }), {
        retries: 3,
        minTimeout: 2000,
        shouldRetry: ({ error }) => !/manifest unknown|not found|unauthorized|denied|invalid reference/i.test(error.message),
      }),
    );
  }
  const envText = await ctx.fact(fileFact(envPath(host)));
  const composeText = await ctx.fact(fileFact(composePath(host)));
  const hash = composeInputsHash(composeText.kind === 'file' ? composeText.content : '', envText.kind === 'file' ? envText.content : '');
  await ctx.change(`start containers (${why})`, async () => {
    // The backend first: the dashboard depends on it being healthy, and compose (v1 at once, v2
    // after its own wait) gives up on a backend still in the restart loop whose cause this run
    // just fixed (e.g. pg_hba.conf), where a bounded wait sees it come back.
    const upDetached = (services: string[]) =>
      ctx.run(sh`cd ${host.root} && ${compose.split(' ')} up -d ${services}`, ['compose up', ...services].join(' '), { onOutput: c => ctx.progress(c) });
    await upDetached(['backend']);
    await waitHealthy(ctx, { dashboard: false });
    await upDetached([]);
    await waitHealthy(ctx);
    await ctx.run(sh`mkdir -p ${STATE_DIR} && printf '%s\n' ${hash} > ${`${APPLIED}.new`} && mv -f ${`${APPLIED}.new`} ${APPLIED}`, 'record applied configuration');
  });
}

/**
 * Bounded wait: up to about two minutes, failing at once (with the logs) on a crash loop: the
 * container exited, or restarted twice more since the wait began. Restarts from before (a loop
 * whose cause was just fixed, e.g. PostgreSQL started again) only count from here on. A backend
 * that keeps running while Docker calls it unhealthy fails after UNHEALTHY_GRACE_MS more, with
 * its health check's own output: a bad image (a promotion's candidate) is told in a minute, not
 * two and a half, while a restart (which makes the health "starting" again) starts the grace anew.
 */
export async function waitHealthy(ctx: StepContext, { dashboard = true } = {}): Promise<void> {
  const probe =
    sh`docker inspect --format '{{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' ${CONTAINERS.backend}` +
    (dashboard ? `; curl -s -o /dev/null -w 'dashboard %{http_code}\n' --max-time 3 http://127.0.0.1:6791/` : '');
  const started = Date.now();
  let baseline: number | undefined;
  let unhealthySince: number | undefined;
  await pRetry(
    async () => {
      const { stdout } = await ctx.run(probe, 'health', { allowFail: true });
      const [status, restarts, health] = stdout.split('\n')[0]!.split(' ');
      baseline ??= Number(restarts) || 0;
      if (status === 'exited' || Number(restarts) - baseline >= 2) {
        const logs = await ctx.run(sh`docker logs --tail 15 ${CONTAINERS.backend} 2>&1`, 'backend logs', { allowFail: true });
        throw new AbortError(redact(`the backend is not staying up (${status}, ${restarts} restarts). Last log lines:\n${logs.stdout.trim()}\nRun scripts/doctor.ts --host ${ctx.host.name} for the cause.`));
      }
      unhealthySince = status === 'running' && health === 'unhealthy' ? (unhealthySince ?? Date.now()) : undefined;
      if (unhealthySince !== undefined && Date.now() - unhealthySince >= UNHEALTHY_GRACE_MS) {
        throw new AbortError(redact(`the backend stays unhealthy: its health check keeps failing (${await lastHealthCheck(ctx)}). Run scripts/doctor.ts --host ${ctx.host.name} for the cause.`));
      }
      if (health !== 'healthy' || (dashboard && !stdout.includes('dashboard 200'))) {
        ctx.progress(`waiting for the backend to be healthy (${health || status})${dashboard ? ' and the dashboard to answer' : ''}`);
        throw new Error(`backend ${health || status}${dashboard ? `; ${stdout.split('\n')[1] ?? ''}` : ''}`);
      }
    },
    { retries: 60, factor: 1, minTimeout: 2000, maxRetryTime: 150_000 },
  ).catch(error => {
    if (error instanceof AbortError || (error as Error).message.startsWith('the backend')) throw error;
    throw new Error(`the backend did not become healthy within ${Math.round((Date.now() - started) / 1000)}s (${(error as Error).message}). Run scripts/doctor.ts --host ${ctx.host.name}.`);
  });
}

const UNHEALTHY_GRACE_MS = 30_000;

/** The newest health check's exit code and last output line, e.g. "exit 1: curl: (22) … error: 500". */
async function lastHealthCheck(ctx: StepContext): Promise<string> {
  const { stdout } = await ctx.run(sh`docker inspect --format '{{json .State.Health}}' ${CONTAINERS.backend}`, 'health log', { allowFail: true });
  try {
    const log = (JSON.parse(stdout) as { Log?: Array<{ ExitCode: number; Output: string }> } | null)?.Log ?? [];
    const last = log[log.length - 1];
    // The last line: curl's progress meter (\r-separated) comes before its error.
    return last ? `exit ${last.ExitCode}: ${last.Output.split(/[\r\n]+/).map(l => l.trim()).filter(Boolean).pop() ?? 'no output'}` : 'no health check result yet';
  } catch {
    return 'its health log cannot be read';
  }
}

export const appliedFact: Fact<string> = { key: 'compose-applied', command: `cat ${APPLIED}`, parse: out => out.trim() };

export const up: Step = {
  name: 'up',
  facts: host => [containersFact, imagesFact(host), appliedFact, fileFact(composePath(host)), fileFact(envPath(host)), dockerState],
  async run(ctx) {
    const { host } = ctx;
    const composeText = await ctx.fact(fileFact(composePath(host)));
    const envText = await ctx.fact(fileFact(envPath(host)));
    if (composeText.kind !== 'file' || envText.kind !== 'file') {
      if (ctx.check) return void ctx.changes.push('start containers (after compose and .env are written)');
      throw new Error(`${composePath(host)} or ${envPath(host)} is missing. Run scripts/secret.ts and scripts/compose.ts first.`);
    }
    const containers = await ctx.fact(containersFact);
    const images = await ctx.fact(imagesFact(host));
    const applied = await ctx.fact(appliedFact);
    const wanted = composeInputsHash(composeText.content, envText.content);
    const problems: string[] = [];
    for (const [role, name] of Object.entries(CONTAINERS)) {
      const c = containers.get(name);
      const ref = role === 'backend' ? host.backend_image : host.dashboard_image;
      if (!c) problems.push(`${name} does not exist`);
      else if (c.status !== 'running') problems.push(`${name} is ${c.status}`);
      // Running but failing (e.g. recreated by hand with another .env): compose up -d puts the
      // configuration of the files back, or waitHealthy fails with the logs.
      else if (c.health === 'unhealthy' || (c.restarts > 0 && c.health === 'starting')) problems.push(`${name} is ${c.health === 'unhealthy' ? 'unhealthy' : 'restarting'}`);
      else if (c.configImage !== ref || c.imageId !== images.get(ref)) problems.push(`${name} runs another image`);
    }
    if (applied !== wanted) problems.push('compose file or .env changed');
    if (problems.length === 0) return `${CONTAINERS.backend} and ${CONTAINERS.dashboard} up to date, running since ${containers.get(CONTAINERS.backend)!.startedAt.slice(0, 19)}Z`;
    await composeUp(ctx, problems.join(', '));
  },
};
