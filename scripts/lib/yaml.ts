// The yaml library is some fifty files, and a run needs it only after a host has answered (to
// render the compose file, or to read one written by hand). A step that will need it starts
// loading it from its warm() while the host reads state, so the loading overlaps the wait;
// yaml() returns it, loading it there and then when nothing started it (unit tests, doctor).
import { createRequire } from 'node:module';
import type YAMLModule from 'yaml';

type Yaml = typeof YAMLModule;

let loaded: Yaml | undefined;
let loading: Promise<void> | undefined;

/** Starts loading yaml in the background (once). */
export function loadYaml(): Promise<void> {
  return (loading ??= import('yaml').then(m => {
    loaded ??= m.default;
  }));
}

export function yaml(): Yaml {
  return (loaded ??= createRequire(import.meta.url)('yaml') as Yaml);
}
