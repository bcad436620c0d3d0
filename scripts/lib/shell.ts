// Remote commands are POSIX sh scripts. Values are quoted here, on our side, so that a path or
// a password can never be read by the remote shell as syntax. (zx's own quoting is for the
// local shell and is not used for remote commands.)

/** Quotes one value as a single POSIX sh word. */
export function quote(value: string | number): string {
  const text = String(value);
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

declare const scriptBrand: unique symbol;
/**
 * A POSIX sh command for a host: only sh`…` (every value quoted) and the helpers below make one,
 * so a string that skipped quoting is not a Script and does not type-check where one is run.
 */
export type Script = string & { readonly [scriptBrand]: true };

/** Tagged template: every interpolated value is quoted; arrays become several quoted words. */
export function sh(strings: TemplateStringsArray, ...values: Array<string | number | Array<string | number>>): Script {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += Array.isArray(value) ? value.map(quote).join(' ') : quote(value);
    out += strings[i + 1] ?? '';
  });
  return out as Script;
}

/**
 * Tagged template that puts Scripts together as they are, e.g. script`${start} && ${wait}`: its
 * values are Scripts (already quoted) or numbers, never plain strings.
 */
export function script(strings: TemplateStringsArray, ...parts: Array<Script | number>): Script {
  let out = strings[0] ?? '';
  parts.forEach((part, i) => {
    out += String(part) + (strings[i + 1] ?? '');
  });
  return out as Script;
}

/** Scripts one after another, one per line. */
export function lines(...parts: Script[]): Script {
  return parts.join('\n') as Script;
}
