#!/usr/bin/env zx
// The floor of `npm run bench`: a zx script that does nothing. Its wall time under `npx zx` is
// the tool's own start-up (npx, node, the tsx loader, zx), which no run of convex-ops can beat.
export {};
