// Templates of the files convex-ops writes on droplets live in files/. An operator may keep
// their own versions in a folder named by CONVEX_OPS_FILES (same file names); a template found
// there takes precedence. Rendering is pure: {{name}} placeholders, nothing else, and no value
// may hold a line break.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_FILES = fileURLToPath(new URL('../../files/', import.meta.url));

/** Where a template is read from: $CONVEX_OPS_FILES/<name> when that exists, else files/<name>. */
export function templatePath(name: string): string {
  const override = process.env.CONVEX_OPS_FILES;
  if (override && existsSync(join(override, name))) return join(override, name);
  return join(REPO_FILES, name);
}

export function templateText(name: string): string {
  return readFileSync(templatePath(name), 'utf8');
}

export type TemplateValue = string | number | string[];

const PLACEHOLDER = /\{\{\s*([a-z0-9_]+)\s*\}\}/g;

/**
 * Replaces every {{name}} with its value. A line whose placeholder has a list value is repeated
 * once per item (an empty list removes the line), so optional and repeated directives need no
 * logic in the template. A placeholder without a value is an error naming the template.
 */
export function renderTemplate(template: string, values: Record<string, TemplateValue>, name = 'template'): string {
  // A value fills part of one line; a line break in it would add a line of its own (in a cron
  // file or a root-run script, a command).
  for (const [key, value] of Object.entries(values)) {
    if ([value].flat().some(item => /[\n\r]/.test(String(item)))) {
      throw new Error(`${name}: the value of {{${key}}} contains a line break, which would add a line to the file. Remove it from the inventory.`);
    }
  }
  const out: string[] = [];
  for (const line of template.split('\n')) {
    const names = [...line.matchAll(PLACEHOLDER)].map(m => m[1]!);
    const missing = names.filter(n => !(n in values));
    if (missing.length) throw new Error(`${name} uses {{${missing[0]}}}, which has no value. Known: ${Object.keys(values).join(', ')}.`);
    const lists = [...new Set(names.filter(n => Array.isArray(values[n])))];
    if (lists.length > 1) throw new Error(`${name}: a line may hold one list placeholder, this one has ${lists.join(', ')}: ${line.trim()}`);
    const fill = (item?: string) => line.replace(PLACEHOLDER, (_, n: string) => (Array.isArray(values[n]) ? item! : String(values[n])));
    if (lists.length === 1) for (const item of values[lists[0]!] as string[]) out.push(fill(item));
    else out.push(fill());
  }
  return out.join('\n');
}
