// The docker step as data: the packages, the engine started, the network, from facts alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Host } from '../../scripts/lib/inventory.ts';
import type { Change } from '../../scripts/lib/plan.ts';
import type { DockerNetworks, DockerState } from '../../scripts/lib/steps/docker.ts';
import { composeCommandOf, requireCompose, docker, planDockerPackages, planEngine, planNetwork } from '../../scripts/lib/steps/docker.ts';
import { packages, testHost } from './fixtures.ts';

const labels = (changes: Change[]) => changes.map(c => c.label);
const ok = docker.phases!.at(-1)!.ok as unknown as (facts: object, host: Host) => string;

const ready: DockerState = { cli: true, engine: true, running: true, compose: 'v2' };
const bare: DockerState = { cli: false, engine: false, running: false, compose: 'none' };
const networks: DockerNetworks = { bridgeGateway: '172.17.0.1', subnets: ['172.17.0.0/16', '172.18.0.0/16'], convexNetwork: true };
const BASE = ['curl', 'ca-certificates'];

test('docker: a fresh host installs the engine, CLI and Compose in one apt run, starts the engine and creates the network', () => {
  const install = planDockerPackages({ state: bare, packages: packages() });
  assert.deepEqual(labels(install), ['install docker.io, docker-cli (or docker.io), curl, ca-certificates, docker-compose-v2 (or docker-compose-plugin, docker-compose)']);
  assert.ok(install[0]!.streams, "apt's output is shown as it runs");
  assert.deepEqual(labels(planEngine({ state: { ...ready, running: false } })), ['start the Docker engine']);
  assert.deepEqual(labels(planNetwork({ networks: { ...networks, convexNetwork: false } })), ['create the Docker network convex-ops']);
});

test('docker: a converged host plans nothing, and says which Compose it has', () => {
  assert.deepEqual(planDockerPackages({ state: ready, packages: packages(...BASE, 'docker.io') }), []);
  assert.deepEqual(planEngine({ state: ready }), []);
  assert.deepEqual(planNetwork({ networks }), []);
  assert.equal(ok({ state: { ...ready, compose: 'v1' }, networks }, testHost), 'engine running, compose v1');
});

test('docker: a stopped engine is started (and waited for) and nothing is installed', () => {
  const stopped = { ...ready, running: false };
  assert.deepEqual(planDockerPackages({ state: stopped, packages: packages(...BASE, 'docker.io') }), []);
  const [start] = planEngine({ state: stopped });
  assert.equal(start!.label, 'start the Docker engine');
  assert.match(start!.script!, /systemctl enable --now docker; else service docker start; fi\n.*docker info >\/dev\/null 2>&1; then exit 0/s);
});

test('docker: an installed docker.io without the CLI it only recommends (Debian 13) still gets the CLI', () => {
  // docker.io counts as installed, so a check of "docker-cli|docker.io" against the installed
  // packages would find nothing to do: the step installs what its own facts found missing.
  assert.deepEqual(labels(planDockerPackages({ state: { ...ready, cli: false }, packages: packages(...BASE, 'docker.io') })), ['install docker-cli (or docker.io)']);
});

test('compose: the command the facts found, and a clear error where there is none', () => {
  assert.equal(composeCommandOf(ready), 'docker compose');
  assert.equal(composeCommandOf({ ...ready, compose: 'v1' }), 'docker-compose');
  assert.equal(composeCommandOf({ ...ready, compose: 'none' }), undefined);
  assert.equal(requireCompose(ready), 'docker compose');
  assert.throws(() => requireCompose({ ...ready, compose: 'none' }), /Docker Compose is not installed\. Run scripts\/docker\.ts first\./);
});
