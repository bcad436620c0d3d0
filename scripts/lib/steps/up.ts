// Pull, `compose up -d`, and wait until the backend is healthy and the dashboard answers — but
// only when the compose file, the values it takes from .env, or the images changed since the
// last successful start. Otherwise nothing is run and nothing restarts. The start is one remote
// script: its pulls retry and its waits poll on the droplet, not from here.
import type { Host } from '../inventory.ts';
import type { Fact, Step } from '../step.ts';
import { STATE_DIR } from '../step.ts';
import { fileFact, sha256 } from '../files.ts';
import type { FileState } from '../files.ts';
import type { Change } from '../plan.ts';
import { phase } from '../plan.ts';
import type { RunResult } from '../ssh.ts';
import { lines, script, sh } from '../shell.ts';
import type { Script } from '../shell.ts';
import { engineRead, parseEngine } from '../docker-api.ts';
import { COMPOSE_MISSING, composeCommandOf, CONTAINERS, containersFact, dockerState } from './docker.ts';
import type { ContainerState, DockerState } from './docker.ts';
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

export const appliedFact: Fact<string> = { key: 'compose-applied', command: sh`cat ${APPLIED}`, parse: out => out.trim() };

/** What compose turns into containers: its file plus the .env values it interpolates. */
export function composeInputsHash(composeText: string, envText: string): string {
  const env = parseEnv(envText);
  const used = [...new Set([...composeText.matchAll(/\$\{(\w+)\}/g)].map(m => m[1]!))].sort();
  return sha256(composeText + '\n' + used.map(k => `${k}=${env.get(k) ?? ''}`).join('\n'));
}

/** The line after which a failing script prints the error the step reports (scriptFailure). */
const FAILURE_MARK = '@@convex-ops-failure';

/**
 * What the start and wait scripts begin with: `$host` for messages, a scratch folder, and
 *   fail LINE…       ends the script; the lines are the step's error
 *   shown CMD…       runs CMD, its output shown as it comes and kept for an error
 *   must WHAT CMD…   runs CMD, or fails with "<host>: WHAT failed (exit n):" and its last lines
 */
function prelude(host: Host): Script[] {
  return [
    sh`host=${host.name}`,
    sh`d=$(mktemp -d) || exit 1`,
    sh`trap 'rm -rf "$d"' EXIT`,
    sh`fail() { printf '%s\\n' '${FAILURE_MARK}' "$@" >&2; exit 1; }`,
    sh`shown() { { "$@" 2>&1; echo "$?" >"$d/rc"; } | tee "$d/out"; return "$(cat "$d/rc")"; }`,
    sh`must() {`,
    sh`  what=$1; shift`,
    sh`  shown "$@" && return 0`,
    sh`  out=$(tail -n 15 "$d/out")`,
    sh`  fail "$host: $what failed (exit $(cat "$d/rc"))\${out:+:}" "$out"`,
    sh`}`,
  ];
}

/** The newest health check's exit code and last output line, e.g. "exit 1: curl: (22) … error: 500". */
const LAST_HEALTH_CHECK: Script[] = [
  sh`last_health_check() {`,
  sh`  log=$(docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}{{println "@@check" .ExitCode}}{{println .Output}}{{end}}{{end}}' ${CONTAINERS.backend} 2>/dev/null) || { echo 'its health log cannot be read'; return; }`,
  // The last line: curl's progress meter (\r-separated) comes before its error.
  sh`  printf '%s\\n' "$log" | tr '\\r' '\\n' | awk '`,
  sh`    /^@@check / { code = $2; line = ""; next }`,
  sh`    { sub(/^[ \\t]+/, ""); sub(/[ \\t]+$/, ""); if ($0 != "") line = $0 }`,
  sh`    END { if (code == "") print "no health check result yet"; else print "exit " code ": " (line == "" ? "no output" : line) }'`,
  sh`}`,
];

/**
 * wait_healthy yes|no: a bounded wait (about 150 s) until the backend is healthy (and, with
 * "yes", the dashboard answers 200). It fails at once, with the last log lines, on a crash loop:
 * the container exited, or restarted twice more since the wait began (restarts from before, a
 * loop whose cause this run just fixed, count only from here on). A backend that keeps running
 * while Docker calls it unhealthy fails after 30 s with its health check's own output: a bad
 * image (a promotion's candidate) is told in a minute, while a restart (which makes the health
 * "starting" again) starts the 30 s anew.
 */
const WAIT_HEALTHY: Script[] = [
  sh`wait_healthy() {`,
  sh`  dashboard=$1 start=$(date +%s) baseline= unhealthy_since=`,
  sh`  while :; do`,
  sh`    now=$(date +%s)`,
  sh`    set -- $(docker inspect --format '{{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' ${CONTAINERS.backend} 2>/dev/null)`,
  sh`    status=\${1:-} restarts=\${2:-0} health=\${3:-}`,
  sh`    baseline=\${baseline:-$restarts}`,
  sh`    if [ "$status" = exited ] || [ $((restarts - baseline)) -ge 2 ]; then`,
  sh`      fail "the backend is not staying up ($status, $restarts restarts). Last log lines:" "$(docker logs --tail 15 ${CONTAINERS.backend} 2>&1)" "Run scripts/doctor.ts --host $host for the cause."`,
  sh`    fi`,
  sh`    if [ "$status" = running ] && [ "$health" = unhealthy ]; then`,
  sh`      unhealthy_since=\${unhealthy_since:-$now}`,
  sh`      [ $((now - unhealthy_since)) -lt 30 ] || fail "the backend stays unhealthy: its health check keeps failing ($(last_health_check)). Run scripts/doctor.ts --host $host for the cause."`,
  sh`    else`,
  sh`      unhealthy_since=`,
  sh`    fi`,
  sh`    state="backend \${health:-$status}" and=`,
  sh`    if [ "$dashboard" = yes ]; then`,
  sh`      answer=$(curl -s -o /dev/null -w 'dashboard %{http_code}' --max-time 3 http://127.0.0.1:6791/)`,
  sh`      state="$state; $answer" and=' and the dashboard to answer'`,
  sh`    fi`,
  sh`    if [ "$health" = healthy ] && { [ "$dashboard" = no ] || [ "$answer" = 'dashboard 200' ]; }; then return 0; fi`,
  sh`    echo "waiting for the backend to be healthy (\${health:-$status})$and"`,
  sh`    [ $((now - start)) -lt 150 ] || fail "the backend did not become healthy within $((now - start))s ($state). Run scripts/doctor.ts --host $host."`,
  sh`    sleep 2`,
  sh`  done`,
  sh`}`,
];

/**
 * pull REF: pulls an image, again after 2, 4 and 8 s when the registry or the network failed;
 * at once fails when the image does not exist or may not be pulled.
 */
const PULL: Script[] = [
  sh`pull() {`,
  sh`  delay=2`,
  sh`  until shown docker pull -q "$1"; do`,
  sh`    if [ "$delay" -gt 8 ] || grep -Eqi 'manifest unknown|not found|unauthorized|denied|invalid reference' "$d/out"; then`,
  sh`      fail "$host: docker pull $1 failed (exit $(cat "$d/rc")):" "$(tail -n 15 "$d/out")"`,
  sh`    fi`,
  sh`    echo "docker pull $1 failed; trying again in $delay s"`,
  sh`    sleep "$delay"; delay=$((delay * 2))`,
  sh`  done`,
  sh`}`,
];

/**
 * The whole start as one remote script: the missing images pulled, the backend started and
 * waited for, then the rest, and the inputs' hash recorded once everything is up. The backend
 * goes first: the dashboard depends on it being healthy, and compose (v1 at once, v2 after its
 * own wait) gives up on a backend still in the restart loop whose cause this run just fixed
 * (e.g. pg_hba.conf), where the bounded wait sees it come back.
 */
export function startContainersScript(host: Host, compose: string, opts: { pull: string[]; appliedHash: string }): Script {
  const command = compose.split(' ');
  return lines(
    ...prelude(host),
    ...LAST_HEALTH_CHECK,
    ...WAIT_HEALTHY,
    ...PULL,
    ...opts.pull.map(ref => sh`pull ${ref}`),
    sh`cd ${host.root} || fail ${`${host.name}: cannot enter ${host.root}`}`,
    sh`must 'compose up backend' ${command} up -d backend`,
    sh`wait_healthy no`,
    sh`must 'compose up' ${command} up -d`,
    sh`wait_healthy yes`,
    sh`{ mkdir -p ${STATE_DIR} && printf '%s\\n' ${opts.appliedHash} > ${`${APPLIED}.new`} && mv -f ${`${APPLIED}.new`} ${APPLIED}; } || fail ${`${host.name}: recording the applied configuration in ${APPLIED} failed`}`,
  );
}

/**
 * Pulls images by digest and proves each is the one named: a digest reference whose image does
 * not list that digest among its RepoDigests fails. Nothing is stopped or started.
 */
export function pullVerifiedScript(host: Host, refs: string[]): Script {
  return lines(
    ...prelude(host),
    ...PULL,
    ...refs.flatMap(ref => [
      sh`pull ${ref}`,
      sh`docker image inspect --format '{{join .RepoDigests " "}}' ${ref} | tr ' ' '\\n' | grep -qxF ${ref} || fail ${`${host.name}: ${ref} was pulled, but the image does not carry that digest`}`,
      sh`echo ${`verified ${ref}`}`,
    ]),
  );
}

/**
 * wait_answering: polls the backend's /version (what its health check asks) every 0.1 s until
 * it answers 200, so that a promotion's window ends as soon as the backend serves, not at
 * Docker's next health check (5 s apart). A backend that answers, but not 200, for 10 s in a
 * row is failing (the real one listens only once its migrations are done), and fails the wait
 * with its answer: a bad candidate is told in seconds, not after Docker's five failed checks.
 * Every second it also looks for a crash loop; at most 150 s.
 */
const WAIT_ANSWERING: Script[] = [
  sh`wait_answering() {`,
  sh`  start=$(date +%s) baseline= i=0 failing_since=`,
  sh`  while :; do`,
  sh`    code=$(curl -s -o "$d/version" -w '%{http_code}' --max-time 2 http://127.0.0.1:3210/version) || true`,
  sh`    [ "$code" != 200 ] || return 0`,
  sh`    now=$(date +%s)`,
  sh`    if [ "\${code:-000}" != 000 ]; then`,
  sh`      failing_since=\${failing_since:-$now}`,
  sh`      [ $((now - failing_since)) -lt 10 ] || fail "the backend answers /version with HTTP $code (for 10 s): $(head -c 300 "$d/version"). Run scripts/doctor.ts --host $host for the cause."`,
  sh`    else`,
  sh`      failing_since=`,
  sh`    fi`,
  sh`    i=$((i + 1))`,
  sh`    if [ $((i % 10)) -eq 0 ]; then`,
  sh`      set -- $(docker inspect --format '{{.State.Status}} {{.RestartCount}}' ${CONTAINERS.backend} 2>/dev/null)`,
  sh`      status=\${1:-} restarts=\${2:-0}`,
  sh`      baseline=\${baseline:-$restarts}`,
  sh`      if [ "$status" = exited ] || [ $((restarts - baseline)) -ge 2 ]; then`,
  sh`        fail "the backend is not staying up ($status, $restarts restarts). Last log lines:" "$(docker logs --tail 15 ${CONTAINERS.backend} 2>&1)"`,
  sh`      fi`,
  sh`      [ $((now - start)) -lt 150 ] || fail "the backend did not answer /version within 150 s ($status). Run scripts/doctor.ts --host $host."`,
  sh`    fi`,
  sh`    sleep 0.1`,
  sh`  done`,
  sh`}`,
];

/** The backend alone started from the compose file as it is, and waited for until it answers (wait_answering). */
export function startBackendAnsweringScript(host: Host, compose: Script): Script {
  return lines(
    ...prelude(host),
    ...WAIT_ANSWERING,
    sh`cd ${host.root} || fail ${`${host.name}: cannot enter ${host.root}`}`,
    script`must 'compose up backend' ${compose} up -d --no-deps backend`,
    sh`wait_answering`,
  );
}

/** The wait alone, for a step that starts the backend itself (restore). */
export function waitHealthyScript(host: Host, { dashboard }: { dashboard: boolean }): Script {
  return lines(...prelude(host), ...LAST_HEALTH_CHECK, ...WAIT_HEALTHY, sh`wait_healthy ${dashboard ? 'yes' : 'no'}`);
}

/** The error a start or wait script printed after FAILURE_MARK, if it failed on purpose. */
export function scriptFailure(result: Pick<RunResult, 'stderr'>): string | undefined {
  const at = result.stderr.lastIndexOf(`${FAILURE_MARK}\n`);
  return at < 0 ? undefined : result.stderr.slice(at + FAILURE_MARK.length + 1).trim() || undefined;
}


/**
 * A start that cannot be made yet because an earlier step's work is missing: a dry run lists it
 * (that step would have done its work by then), a real run fails on it with `message`.
 */
function blockedStart(label: string, message: string): Change {
  return { label, script: sh`echo ${message} >&2; exit 1`, failure: () => message };
}

/** Why the containers differ from what the inventory and the files want; empty when they do not. */
function containerProblems(containers: Map<string, ContainerState>, images: Map<string, string>, host: Host): string[] {
  const problems: string[] = [];
  for (const [role, name] of Object.entries(CONTAINERS)) {
    const c = containers.get(name);
    const ref = role === 'backend' ? host.backend_image : host.dashboard_image;
    if (!c) problems.push(`${name} does not exist`);
    else if (c.status !== 'running') problems.push(`${name} is ${c.status}`);
    // Running but failing (e.g. recreated by hand with another .env): compose up -d puts the
    // configuration of the files back, or the wait fails with the logs.
    else if (c.health === 'unhealthy' || (c.restarts > 0 && c.health === 'starting')) problems.push(`${name} is ${c.health === 'unhealthy' ? 'unhealthy' : 'restarting'}`);
    else if (c.configImage !== ref || c.imageId !== images.get(ref)) problems.push(`${name} runs another image`);
  }
  return problems;
}

export interface UpFacts {
  containers: Map<string, ContainerState>;
  images: Map<string, string>;
  applied: string;
  compose: FileState;
  env: FileState;
  docker: DockerState;
}

/** One start when the containers, their images or compose's inputs differ from what is wanted; else nothing. */
export function planUp(facts: UpFacts, host: Host): Change[] {
  if (facts.compose.kind !== 'file' || facts.env.kind !== 'file') {
    return [blockedStart('start containers (after compose and .env are written)', `${composePath(host)} or ${envPath(host)} is missing. Run scripts/secret.ts and scripts/compose.ts first.`)];
  }
  const compose = composeCommandOf(facts.docker);
  if (!compose) return [blockedStart('start containers (after Docker Compose is installed)', COMPOSE_MISSING)];
  const appliedHash = composeInputsHash(facts.compose.content, facts.env.content);
  const problems = containerProblems(facts.containers, facts.images, host);
  if (facts.applied !== appliedHash) problems.push('compose file or .env changed');
  if (problems.length === 0) return [];
  const pull = [...facts.images].filter(([, id]) => !id).map(([ref]) => ref);
  const start = `start containers (${problems.join(', ')})`;
  return [{ label: pull.length ? `pull ${pull.join(', ')} and ${start}` : start, script: startContainersScript(host, compose, { pull, appliedHash }), streams: true, failure: scriptFailure }];
}

export const up: Step = {
  name: 'up',
  phases: [
    phase({
      facts: (host: Host) => ({
        containers: containersFact,
        images: imagesFact(host),
        applied: appliedFact,
        compose: fileFact(composePath(host)),
        env: fileFact(envPath(host)),
        docker: dockerState,
      }),
      plan: planUp,
      ok: ({ containers }) => `${CONTAINERS.backend} and ${CONTAINERS.dashboard} up to date, running since ${containers.get(CONTAINERS.backend)?.startedAt.slice(0, 19)}Z`,
    }),
  ],
};
